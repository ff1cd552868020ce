"""The Redis broker: queues are Redis Streams read by one consumer group, ``corral``.

Key names (all under ``corral:``, or ``corral:NAME:`` with ``?namespace=NAME`` in the URL;
made in this one place, :class:`Keys`)::

    q:{queue}        stream   attempts to run; entries stay pending until finished
    q:{queue}:w:{worker}  stream  attempts a balancing strategy sent to that worker only
    t:{queue}        set      the workers with such a stream (to look after when they go)
    r:{reply}        stream   a coordinator session's events (START, OUTPUT, BEAT, END); a day
    done:{attempt}   string   the attempt finished (a day): a reclaimed copy is not re-run
    cancel:{attempt} string   the coordinator gave up on it (a day): stop it, or skip it
    dlq              stream   dead letters: the attempt's fields, why, its history
    workers          zset     worker id -> last beat (epoch s)
    w:{worker}       hash     what a worker said of itself at its last beat
    lease:{run}      string   the run's coordinator (its holder), with a TTL
    fence:{run}      counter  fencing tokens, one per coordinator that took the lease; a week

How an attempt moves (a worker's view)::

    XADD q:default ──XREADGROUP (>)──> held by worker A ──finish (a script): XADD r:... END,
                                         │   SET done, XACK, XDEL (never trimmed pending)
             A renews (XCLAIM JUSTID,    │
             its own entries only) ──────┤ A goes silent past the heartbeat timeout
                                         └──XAUTOCLAIM (min idle = timeout)──> worker B

An attempt sent to one worker (a balancing strategy's, ``AttemptMessage.worker``) goes to
that worker's own stream of the queue, which it reads with the shared one, in the same group;
every worker's reclaim also XAUTOCLAIMs the entries of the others' own streams, and moves the
unread entries of a gone worker's stream (silent past the timeout, stopping, or stopped) to the
shared stream (a script, :data:`_RESCUE`).

A live worker renews every entry it holds every few seconds (:meth:`RedisBroker.renew`, a
script that re-claims an entry only while the PEL says this worker holds it), which resets
the entry's idle time: a long attempt whose worker is alive is never reclaimed, however long it
runs; there is no visibility timeout. An entry whose worker stopped renewing is reclaimed by
the next worker's XAUTOCLAIM after the heartbeat timeout, and its delivery count rises.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

from corral._errors import BrokenBroker
from corral.fleet._broker import (
    DEFAULT_HEARTBEAT_TIMEOUT,
    Claimed,
    DeadLetter,
    WorkerInfo,
    safe_url,
)
from corral.fleet._protocol import AttemptMessage, Event

__all__ = ["DEFAULT_HEARTBEAT_TIMEOUT", "GROUP", "PREFIX", "Keys", "RedisBroker"]

PREFIX = "corral:"
GROUP = "corral"
MARK_TTL_S = 86_400  # done/cancel marks: a day, far beyond any redelivery
WORKER_TTL_S = 3_600  # a gone worker stays listed (as gone) for an hour
INSTALL_HINT = "the fleet's Redis broker needs the redis extra: pip install 'corral[redis]'"


class Keys:
    """Every key name, under ``prefix`` (``corral:``, or ``corral:{namespace}:`` for a URL
    with ``?namespace=NAME``: several fleets on one Redis)."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix
        self.dlq = f"{prefix}dlq"
        self.workers = f"{prefix}workers"

    def queue(self, queue: str) -> str:
        return f"{self.prefix}q:{queue}"

    def targeted(self, queue: str, worker: str) -> str:
        return f"{self.prefix}q:{queue}:w:{worker}"

    def targets(self, queue: str) -> str:
        return f"{self.prefix}t:{queue}"

    def stream(self, queue: str, target: str | None) -> str:
        """The stream of an entry: its queue's, or its target worker's own stream of it."""
        return self.queue(queue) if target is None else self.targeted(queue, target)

    def of(self, claimed: Claimed) -> str:
        return self.stream(claimed.queue, claimed.target)

    def queue_name(self, key: bytes) -> tuple[str, str | None]:
        """The queue and target worker (None: shared) of a stream's key (a queue name has no
        ':')."""
        queue, _, target = key.decode()[len(self.prefix) + 2:].partition(":w:")
        return queue, target or None

    def reply(self, reply: str) -> str:
        return f"{self.prefix}r:{reply}"

    def done(self, attempt: str) -> str:
        return f"{self.prefix}done:{attempt}"

    def cancel(self, attempt: str) -> str:
        return f"{self.prefix}cancel:{attempt}"

    def worker(self, worker: str) -> str:
        return f"{self.prefix}w:{worker}"

    def lease(self, run_id: str) -> str:
        return f"{self.prefix}lease:{run_id}"

    def fence(self, run_id: str) -> str:
        return f"{self.prefix}fence:{run_id}"


# Re-claim (reset the idle time of) the entries this consumer still holds; return the others.
_RENEW = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""

# Finish attempts: for each, its done mark, XACK and XDEL of its entry, and its END on its
# reply stream, where the ENDs of one reply go as one entry (fields h0, d0, h1, d1, ...: each
# END's header and data; see _events), in chunks that Lua's unpack takes. ARGV: group, the
# mark's TTL, then 6 per attempt: queue key, entry, reply key, done key, the END's header and
# data (Event.header, Event.data). One script (atomic), cheap to send for many.
_FINISH = """
local ends, replies = {}, {}
for i = 3, #ARGV, 6 do
  local fields = ends[ARGV[i + 2]]
  if not fields then
    fields = {}
    ends[ARGV[i + 2]] = fields
    replies[#replies + 1] = ARGV[i + 2]
  end
  local n = #fields / 2
  fields[#fields + 1] = 'h' .. n
  fields[#fields + 1] = ARGV[i + 4]
  fields[#fields + 1] = 'd' .. n
  fields[#fields + 1] = ARGV[i + 5]
  redis.call('SET', ARGV[i + 3], '1', 'EX', ARGV[2])
  redis.call('XACK', ARGV[i], ARGV[1], ARGV[i + 1])
  redis.call('XDEL', ARGV[i], ARGV[i + 1])
end
for _, reply in ipairs(replies) do
  local fields = ends[reply]
  for j = 1, #fields, 2000 do
    redis.call('XADD', reply, '*', unpack(fields, j, math.min(j + 1999, #fields)))
  end
end
return 0
"""

# Queue attempts that share their run, reply, executor, value limit and resources: the
# entries AttemptMessage.fields() makes, from the 4 arguments that differ between them (an
# XADD each would take ~19 to pack, and give a reply each). ARGV: the key prefix (Keys: a
# queue's key is prefix .. 'q:' .. queue), run, reply, executor, value limit, resources ("":
# none), then 5 per attempt: id, task, queue, body, target worker ("": any; else the entry goes
# to prefix .. 'q:' .. queue .. ':w:' .. target, and the worker joins prefix .. 't:' .. queue).
_ENQUEUE = """
local fixed = {'run', ARGV[2], 'executor', ARGV[4], 'reply', ARGV[3], 'max_value', ARGV[5]}
if ARGV[6] ~= '' then
  fixed[#fixed + 1] = 'resources'
  fixed[#fixed + 1] = ARGV[6]
end
for i = 7, #ARGV, 5 do
  local key, target = ARGV[1] .. 'q:' .. ARGV[i + 2], ARGV[i + 4]
  if target == '' then
    redis.call('XADD', key, '*', 'id', ARGV[i], 'task', ARGV[i + 1], 'queue', ARGV[i + 2],
               'body', ARGV[i + 3], unpack(fixed))
  else
    redis.call('SADD', ARGV[1] .. 't:' .. ARGV[i + 2], target)
    redis.call('XADD', key .. ':w:' .. target, '*', 'id', ARGV[i], 'task', ARGV[i + 1],
               'queue', ARGV[i + 2], 'body', ARGV[i + 3], 'worker', target, unpack(fixed))
  end
end
return 0
"""

# Look after the own streams of a queue's gone workers (no beat since the cutoff, not
# 'running', or deregistered): move the entries nobody read yet to the shared stream (without
# their 'worker' field), and forget a stream left empty. Entries read and not finished stay:
# XAUTOCLAIM takes them like any other. ARGV: the key prefix, queue, group, cutoff (epoch
# s), then the workers of the queue's t:{queue} set. Returns how many entries moved.
_RESCUE = """
local prefix, queue, group, cutoff = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local shared, set = prefix .. 'q:' .. queue, prefix .. 't:' .. queue
local moved = 0
for i = 5, #ARGV do
  local w = ARGV[i]
  local beat = redis.call('ZSCORE', prefix .. 'workers', w)
  local state = redis.call('HGET', prefix .. 'w:' .. w, 'state')
  if not beat or tonumber(beat) < cutoff or state ~= 'running' then
    local key = shared .. ':w:' .. w
    local start = '-'
    if redis.call('EXISTS', key) == 1 then
      for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
        local info = {}
        for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
        if info['name'] == group then start = '(' .. info['last-delivered-id'] end
      end
    end
    for _, entry in ipairs(redis.call('XRANGE', key, start, '+')) do
      local fields, kept = entry[2], {}
      for j = 1, #fields, 2 do
        if fields[j] ~= 'worker' then
          kept[#kept + 1] = fields[j]
          kept[#kept + 1] = fields[j + 1]
        end
      end
      redis.call('XADD', shared, '*', unpack(kept))
      redis.call('XDEL', key, entry[1])
      moved = moved + 1
    end
    if redis.call('XLEN', key) == 0 then
      redis.call('DEL', key)
      redis.call('SREM', set, w)
    end
  end
end
return moved
"""

# Claim up to a count of new entries from streams in order (a worker's own streams, then the
# shared ones), the count over all of them (XREADGROUP's COUNT is per stream): a worker never
# holds more than its free slots. Without BLOCK: when this finds nothing, the caller waits with
# a blocking XREADGROUP. KEYS: the streams; ARGV: group, consumer, count.
_CLAIM = """
local left = tonumber(ARGV[3])
local out = {}
for _, key in ipairs(KEYS) do
  if left <= 0 then break end
  local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', left,
                         'STREAMS', key, '>')
  if got then
    out[#out + 1] = got[1]
    left = left - #got[1][2]
  end
end
return out
"""

_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {0, holder} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local fence = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 604800)
return {1, fence}
"""

_RENEW_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisBroker:
    """The :class:`~corral.fleet._broker.Broker` over Redis Streams (Redis >= 6.2 for
    XAUTOCLAIM). Thread-safe: redis-py's pool gives each thread a connection. Make one with
    :meth:`connect`."""

    def __init__(self, client: Any, url: str, *, heartbeat_timeout: float,
                 namespace: str = "") -> None:
        self._redis = client
        self.keys = Keys(f"{PREFIX}{namespace}:" if namespace else PREFIX)
        self.url = url
        self.heartbeat_timeout = heartbeat_timeout
        self._groups: set[str] = set()  # queues whose group we know exists
        self._epoch = ""
        self._renew = client.register_script(_RENEW)
        self._finish = client.register_script(_FINISH)
        self._enqueue = client.register_script(_ENQUEUE)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew_lease = client.register_script(_RENEW_LEASE)
        self._release = client.register_script(_RELEASE)
        self._rescue = client.register_script(_RESCUE)
        self._claim = client.register_script(_CLAIM)

    @classmethod
    def connect(cls, url: str, *, heartbeat_timeout: float | None = None) -> Self:
        """Connect to the Redis at ``url`` and check it answers; raises
        :class:`~corral.errors.BrokenBroker` with the reason otherwise."""
        timeout = DEFAULT_HEARTBEAT_TIMEOUT if heartbeat_timeout is None else heartbeat_timeout
        if not timeout > 0:
            raise ValueError(f"the heartbeat timeout must be > 0 seconds, not {timeout}")
        try:
            import redis
        except ImportError as exc:
            raise BrokenBroker(INSTALL_HINT) from exc
        shown = safe_url(url)
        url, namespace = _namespace(url)
        parts = urlsplit(url)
        if parts.scheme in ("redis", "rediss") and parts.path.strip("/") \
                and not parts.path.strip("/").isdigit():
            raise BrokenBroker(f"not a usable Redis URL: {shown} (the database after the "
                               "'/' is a number: redis://HOST:PORT/0)")
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=5,
                                          health_check_interval=30)
        except (ValueError, redis.RedisError) as exc:
            raise BrokenBroker(f"not a usable Redis URL: {shown} ({exc})") from exc
        try:
            client.ping()
            version = client.info("server").get("redis_version", "0")
        except redis.RedisError as exc:
            client.close()
            raise BrokenBroker(f"cannot reach the broker at {shown}: "
                               f"{type(exc).__name__}: {exc}") from exc
        if tuple(int(p) for p in str(version).split(".")[:2] if p.isdigit()) < (6, 2):
            client.close()
            raise BrokenBroker(f"the Redis at {shown} is {version}; the fleet needs 6.2 or "
                               "newer (XAUTOCLAIM)")
        return cls(client, url, heartbeat_timeout=timeout, namespace=namespace)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._redis.close()

    @contextlib.contextmanager
    def _talking(self, what: str) -> Iterator[None]:
        """Redis errors become :class:`BrokenBroker`, with the original as ``__cause__``."""
        import redis

        try:
            yield
        except redis.RedisError as exc:
            raise BrokenBroker(f"the broker at {safe_url(self.url)} failed to {what}: "
                               f"{type(exc).__name__}: {exc}") from exc

    def epoch(self) -> str:
        with self._talking("say who it is"):
            epoch = str(self._redis.info("server").get("run_id", ""))
        if epoch != self._epoch:  # a new server (or data): its groups are to be made again
            self._epoch = epoch
            self._groups.clear()
        return epoch

    def _ensure_groups(self, queues: Sequence[str], worker: str | None = None) -> None:
        """Make the group of each queue's stream (and of ``worker``'s own stream of it), once
        (from the start: entries queued before the group was made are read too)."""
        import redis

        for queue in queues:
            for key in (self.keys.queue(queue),) if worker is None else \
                    (self.keys.queue(queue), self.keys.targeted(queue, worker)):
                if key in self._groups:
                    continue
                try:
                    self._redis.xgroup_create(key, GROUP, id="0", mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
                self._groups.add(key)

    def _forget_groups(self, exc: BaseException) -> None:
        """After NOGROUP (Redis lost its data: restarted without persistence), make the
        groups again on the next call."""
        if "NOGROUP" in str(exc):
            self._groups.clear()

    # ------------------------------------------------------------------ coordinator
    def enqueue(self, messages: Sequence[AttemptMessage]) -> None:
        if not messages:
            return
        with self._talking("queue attempts"):
            self._ensure_groups(sorted({m.queue for m in messages}))
            # One script call per stretch of attempts that share what the script takes once
            # (a coordinator's batch: one stretch), in order; all in one round trip.
            calls: list[list[str | bytes | int]] = []
            shared: tuple[object, ...] = ()
            for m in messages:
                now = (m.run_id, m.reply, m.executor, m.max_value_bytes, m.resources)
                if now != shared:
                    shared = now
                    fields = m.fields()
                    calls.append([self.keys.prefix, m.run_id, m.reply, m.executor,
                                  fields["max_value"], fields.get("resources", "")])
                calls[-1].extend((m.id, m.task_id, m.queue, m.body, m.worker or ""))
            if len(calls) == 1:
                self._enqueue(args=calls[0])
                return
            pipe = self._redis.pipeline(transaction=False)
            for args in calls:
                self._enqueue(args=args, client=pipe)
            pipe.execute()

    def read_events(self, reply: str, after: str, *, block_s: float,
                    count: int) -> tuple[str, list[Event]]:
        key = self.keys.reply(reply)
        with self._talking("read events"):
            # What was read before is the coordinator's now: trim it (the entry at ``after``
            # stays, as the stream's position) in the same round trip as the read. A stream
            # whose coordinator died goes after a day.
            pipe = self._redis.pipeline(transaction=False)
            if after != "0":
                pipe.xtrim(key, minid=after)
            pipe.expire(key, MARK_TTL_S)
            pipe.xread({key: after}, count=count, block=max(1, int(block_s * 1000)))
            answer = pipe.execute()[-1]
        if not answer:
            return after, []
        entries = answer[0][1]
        return entries[-1][0].decode(), [e for _, fields in entries for e in _events(fields)]

    def drop_reply(self, reply: str) -> None:
        with self._talking("drop a reply stream"):
            self._redis.delete(self.keys.reply(reply))

    def cancel(self, attempts: Sequence[str]) -> None:
        if not attempts:
            return
        with self._talking("cancel attempts"):
            pipe = self._redis.pipeline(transaction=False)
            for attempt in attempts:
                pipe.set(self.keys.cancel(attempt), b"1", ex=MARK_TTL_S)
            pipe.execute()

    def acquire_lease(self, run_id: str, holder: str, ttl_s: float) -> int:
        with self._talking("take the run's lease"):
            ok, value = self._acquire(keys=[self.keys.lease(run_id), self.keys.fence(run_id)],
                                      args=[holder, int(ttl_s * 1000)])
        if not ok:
            other = value.decode() if isinstance(value, bytes) else value
            raise BrokenBroker(f"run {run_id} already has a live coordinator ({other}): one "
                               "coordinator per run")
        return int(value)

    def renew_lease(self, run_id: str, holder: str, ttl_s: float) -> bool:
        with self._talking("renew the run's lease"):
            return bool(self._renew_lease(keys=[self.keys.lease(run_id)],
                                          args=[holder, int(ttl_s * 1000)]))

    def release_lease(self, run_id: str, holder: str) -> None:
        with self._talking("release the run's lease"):
            self._release(keys=[self.keys.lease(run_id)], args=[holder])

    # ------------------------------------------------------------------ workers
    def claim(self, consumer: str, queues: Sequence[str], count: int, *,
              block_s: float) -> list[Claimed]:
        import redis

        # Its own streams first (what was sent to it), then the shared ones; what is there
        # now, ``count`` in all (a script), else the first to come (a blocking read, which
        # may bring more than ``count`` only when entries reach two streams at once).
        streams = [self.keys.targeted(q, consumer) for q in queues]
        streams += [self.keys.queue(q) for q in queues]
        with self._talking("claim attempts"):
            self._ensure_groups(queues, consumer)
            try:
                found = [(key, [(e, dict(zip(f[::2], f[1::2], strict=True))) for e, f in got])
                         for key, got in self._claim(keys=streams, args=[GROUP, consumer, count])]
                if not found:
                    found = self._redis.xreadgroup(
                        GROUP, consumer, dict.fromkeys(streams, ">"), count=count,
                        block=max(1, int(block_s * 1000))) or []
            except redis.ResponseError as exc:
                self._forget_groups(exc)
                raise
        out = []
        for key, entries in found:
            queue, target = self.keys.queue_name(key)
            for entry, fields in entries:
                out.append(Claimed(queue, entry.decode(), AttemptMessage.from_fields(fields),
                                   target=target))
        return out

    def reclaim(self, consumer: str, queues: Sequence[str], count: int) -> list[Claimed]:
        import redis

        idle_ms = int(self.heartbeat_timeout * 1000)
        out: list[Claimed] = []
        with self._talking("reclaim attempts"):
            self._ensure_groups(queues)
            for queue in queues:
                targets = sorted(t.decode() for t in
                                 self._redis.smembers(self.keys.targets(queue)))
                if targets:  # gone workers' unread attempts: to the shared stream
                    self._rescue(args=[self.keys.prefix, queue, GROUP,
                                       time.time() - self.heartbeat_timeout, *targets])
                for target in (None, *targets):
                    if len(out) >= count:
                        return out
                    key = self.keys.stream(queue, target)
                    try:
                        _, entries, *_ = self._redis.xautoclaim(
                            key, GROUP, consumer, idle_ms, start_id="0-0",
                            count=count - len(out))
                    except redis.ResponseError as exc:
                        if target is not None:  # a worker's stream not read yet: no group
                            continue
                        self._forget_groups(exc)
                        raise
                    entries = [(e, f) for e, f in entries if f]  # deleted meanwhile: nothing
                    if not entries:
                        continue
                    ids = [e.decode() for e, _ in entries]
                    pending = self._redis.xpending_range(key, GROUP, min=ids[0], max=ids[-1],
                                                         count=len(ids) * 4,
                                                         consumername=consumer)
                    times = {p["message_id"].decode(): int(p["times_delivered"])
                             for p in pending}
                    for (_, fields), eid in zip(entries, ids, strict=True):
                        out.append(Claimed(queue, eid, AttemptMessage.from_fields(fields),
                                           deliveries=times.get(eid, 2), target=target))
        return out

    def renew(self, consumer: str, held: Sequence[Claimed]) -> list[Claimed]:
        by_stream: dict[str, list[Claimed]] = {}
        for c in held:
            by_stream.setdefault(self.keys.of(c), []).append(c)
        lost: list[Claimed] = []
        with self._talking("renew held attempts"):
            for key, items in by_stream.items():
                gone = self._renew(keys=[key],
                                   args=[GROUP, consumer, *(c.entry for c in items)])
                gone_ids = {g.decode() for g in gone}
                lost.extend(c for c in items if c.entry in gone_ids)
        return lost

    def hand_back(self, consumer: str, held: Sequence[Claimed]) -> None:
        if not held:
            return
        # Idle as if silent for a long while: the next XAUTOCLAIM takes it at once.
        idle_ms = int(self.heartbeat_timeout * 1000) * 100 + 3_600_000
        with self._talking("hand attempts back"):
            pipe = self._redis.pipeline(transaction=False)
            for c in held:
                pipe.xclaim(self.keys.of(c), GROUP, consumer, 0, [c.entry], idle=idle_ms,
                            justid=True)
            pipe.execute()

    def states(self, attempts: Sequence[str]) -> list[str | None]:
        if not attempts:
            return []
        with self._talking("read attempt states"):
            keys = [self.keys.done(a) for a in attempts] + [self.keys.cancel(a) for a in attempts]
            values = self._redis.mget(keys)
        n = len(attempts)
        return ["done" if values[k] is not None else
                "cancelled" if values[n + k] is not None else None for k in range(n)]

    def post(self, events: Sequence[tuple[str, Event]]) -> None:
        if not events:
            return
        with self._talking("post events"):
            pipe = self._redis.pipeline(transaction=False)
            self._post(pipe, events)
            pipe.execute()

    def _post(self, pipe: Any, events: Sequence[tuple[str, Event]]) -> None:
        """Add ``events`` to ``pipe``: one entry per reply stream, its events' fields in order
        (h{n}, then d{n} if it has data, n unique in the entry; see _events)."""
        entries: dict[str, dict[str, str | bytes]] = {}
        for reply, event in events:
            fields = entries.setdefault(reply, {})
            n = len(fields)
            fields[f"h{n}"] = event.header()
            if event.data:
                fields[f"d{n}"] = event.data
        for reply, fields in entries.items():
            pipe.xadd(self.keys.reply(reply), fields)

    def finish(self, done: Sequence[tuple[Claimed, Event]],
               events: Sequence[tuple[str, Event]] = ()) -> None:
        if not done:
            self.post(events)
            return
        keys = self.keys
        args: list[bytes | str | int] = [GROUP, MARK_TTL_S]
        for claimed, end in done:
            message = claimed.message
            args.extend((keys.of(claimed), claimed.entry, keys.reply(message.reply),
                         keys.done(message.id), end.header(), end.data))
        with self._talking("record outcomes"):
            pipe = self._redis.pipeline(transaction=False)
            self._post(pipe, events)
            self._finish(args=args, client=pipe)
            pipe.execute()

    def _retire(self, pipe: Any, claimed: Claimed) -> None:
        pipe.set(self.keys.done(claimed.message.id), b"1", ex=MARK_TTL_S)
        key = self.keys.of(claimed)
        pipe.xack(key, GROUP, claimed.entry)
        pipe.xdel(key, claimed.entry)

    def skip(self, claimed: Sequence[Claimed]) -> None:
        if not claimed:
            return
        with self._talking("acknowledge skipped attempts"):
            pipe = self._redis.pipeline(transaction=False)
            for c in claimed:
                key = self.keys.of(c)
                pipe.xack(key, GROUP, c.entry)
                pipe.xdel(key, c.entry)
            pipe.execute()

    def dead_letter(self, claimed: Claimed, reason: str, history: Sequence[str],
                    end: Event) -> None:
        fields = {**claimed.message.fields(), "reason": reason,
                  "history": json.dumps(list(history)), "at": f"{time.time():.3f}",
                  "deliveries": str(claimed.deliveries)}
        with self._talking("dead-letter an attempt"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.xadd(self.keys.dlq, fields)
            pipe.xadd(self.keys.reply(claimed.message.reply), end.fields())
            self._retire(pipe, claimed)
            pipe.execute()

    def register(self, info: WorkerInfo) -> None:
        fields = info.fields()
        with self._talking("register a worker"):
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(self.keys.worker(info.id), mapping=fields)
            pipe.expire(self.keys.worker(info.id), WORKER_TTL_S)
            pipe.zadd(self.keys.workers, {info.id: info.last_beat})
            pipe.execute()

    def deregister(self, worker: str) -> None:
        with self._talking("deregister a worker"):
            pipe = self._redis.pipeline(transaction=False)
            pipe.delete(self.keys.worker(worker))
            pipe.zrem(self.keys.workers, worker)
            pipe.execute()

    def workers(self) -> list[WorkerInfo]:
        now = time.time()
        with self._talking("list workers"):
            ids = [w.decode() for w in self._redis.zrange(self.keys.workers, 0, -1)]
            pipe = self._redis.pipeline(transaction=False)
            for w in ids:
                pipe.hgetall(self.keys.worker(w))
            rows = pipe.execute()
            stale = [w for w, row in zip(ids, rows, strict=True) if not row]
            if stale:
                self._redis.zrem(self.keys.workers, *stale)
        out = []
        for worker, row in zip(ids, rows, strict=True):
            if not row:
                continue
            f = {k.decode(): v.decode() for k, v in row.items()}
            last = float(f.get("last_beat", 0))
            state = f.get("state", "running")
            if state != "stopped" and now - last > self.heartbeat_timeout:
                state = "gone"
            out.append(WorkerInfo.from_fields(worker, f, state))
        return out

    def queue_depth(self, queues: Sequence[str]) -> int:
        """Attempts queued on ``queues`` that no worker has taken yet (a pool's demand), in
        their shared streams and in the streams of the workers a strategy sent some to."""
        with self._talking("count queued attempts"):
            streams = []
            for q in queues:
                targets = sorted(t.decode() for t in self._redis.smembers(self.keys.targets(q)))
                streams += [self.keys.stream(q, t) for t in (None, *targets)]
            pipe = self._redis.pipeline(transaction=False)
            for key in streams:
                pipe.xlen(key)
                pipe.xpending(key, GROUP)
            rows = pipe.execute(raise_on_error=False)  # NOGROUP: nothing taken from it yet
        return sum(max(0, n - (p["pending"] if isinstance(p, dict) else 0))
                   for n, p in zip(rows[::2], rows[1::2], strict=True))

    def saturation(self) -> float:
        with self._talking("say how full it is"):
            clients = self._redis.info("clients")
            memory = self._redis.info("memory")
        most = int(clients.get("maxclients") or 10_000)  # INFO says it from Redis 7; the default
        used = int(clients.get("connected_clients", 0)) / max(1, most)
        limit = int(memory.get("maxmemory", 0))  # 0: no limit
        if limit:
            used = max(used, int(memory.get("used_memory", 0)) / limit)
        return min(1.0, used)

    # ------------------------------------------------------------------ dead letters
    def dead_letters(self, *, count: int = 1000) -> list[DeadLetter]:
        with self._talking("list dead letters"):
            entries = self._redis.xrange(self.keys.dlq, count=count)
        return [_dead_letter(e, f, with_message=False) for e, f in entries]

    def dead_letter_entry(self, entry: str) -> DeadLetter | None:
        with self._talking("read a dead letter"):
            entries = self._redis.xrange(self.keys.dlq, min=entry, max=entry, count=1)
        if not entries:
            return None
        return _dead_letter(*entries[0], with_message=True)

    def retry_dead_letter(self, entry: str) -> AttemptMessage | None:
        letter = self.dead_letter_entry(entry)
        if letter is None or letter.message is None:
            return None
        message = replace(letter.message, worker=None)  # for any worker now
        with self._talking("queue a dead letter again"):
            self._ensure_groups([message.queue])
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(self.keys.done(message.id))
            pipe.xadd(self.keys.queue(message.queue), message.fields())
            pipe.xdel(self.keys.dlq, entry)
            pipe.execute()
        return message

    def purge_dead_letters(self, entries: Sequence[str] | None = None) -> int:
        with self._talking("purge dead letters"):
            if entries is None:
                n = int(self._redis.xlen(self.keys.dlq))
                self._redis.delete(self.keys.dlq)
                return n
            return int(self._redis.xdel(self.keys.dlq, *entries)) if entries else 0


def _namespace(url: str) -> tuple[str, str]:
    """``url`` without its ``namespace=`` query parameter, and that namespace ("": none)."""
    from urllib.parse import parse_qsl, urlencode

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [v for k, v in query if k == "namespace"]
    if not names:
        return url, ""
    rest = urlencode([(k, v) for k, v in query if k != "namespace"])
    return urlunsplit(parts._replace(query=rest)), names[-1]


def _events(fields: Mapping[bytes, bytes]) -> Iterator[Event]:
    """The events of a reply stream's entry: one (fields h, d: Event.fields) or several
    (h0, d0, h1, ...: each header followed by its data, if it has any)."""
    header = None
    for key, value in fields.items():
        if key[:1] == b"h":
            if header is not None:
                yield Event.from_header(header)
            header = value
        elif header is not None:  # its data
            yield Event.from_header(header, value)
            header = None
    if header is not None:
        yield Event.from_header(header)


def _dead_letter(entry: bytes, fields: Mapping[bytes, bytes], *,
                 with_message: bool) -> DeadLetter:
    def text(key: bytes) -> str:
        return fields.get(key, b"").decode()

    return DeadLetter(
        id=entry.decode(), attempt=text(b"id"), run_id=text(b"run"), task_id=text(b"task"),
        queue=text(b"queue"), reason=text(b"reason"),
        history=tuple(json.loads(text(b"history") or "[]")),
        at=float(text(b"at") or 0),
        message=AttemptMessage.from_fields(fields) if with_message else None)
