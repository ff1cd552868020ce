"""Fleet-wide flow control: rate limits' GCRA state and circuit breakers in Redis, shared by
every run and worker on it.

With a Redis broker, ``10/s`` means 10/s across the fleet: the coordinator's scheduler (tasks
with ``rate_limit:``), ``corral.limit`` in its own tasks, and ``corral.limit`` in thread and
async tasks on ``corral worker``\\ s all take the limit through one script::

    coordinator: Gate.check / corral.limit ──┐
    worker A: corral.limit in a task ────────┼──> _GCRA (one EVALSHA, atomic) over rl:{name}
    worker B, another run's coordinator ... ─┘

The script is :func:`corral._limits.gcra` in Lua, over all the names a caller asks for at once
(all are taken or none), so the arithmetic, the burst and the "late wake-ups do not drift"
rule (``due``) are the same as in one process. What differs is the clock: the script reads the
Redis server's ``TIME``, so machines whose clocks disagree still share one schedule; a caller
says ``now`` on its own clock and gets its retry time back on that clock (the script answers a
delay). Tests pass ``server_time=False`` to drive every process with one fake clock.

Keys (under the broker's prefix: ``corral:``, or ``corral:NAME:`` with ``?namespace=NAME``)::

    rl:{name}      string  the limit's theoretical arrival time (TAT), seconds on the clock
                           above; expires once it is in the past by an interval (then it
                           means what no key means)
    limits:{run}   hash    name -> {"rate": per second, "burst": n}: the run's declarations,
                           written by its coordinator, read by the workers that run its tasks
    br:{name}      string  a circuit breaker's BreakerStatus (JSON), times on the clock above;
                           a day after its last change it expires (closed, as no key means)

A limit or a breaker is shared by name: two runs that both declare ``api`` share it, each
with its own declaration (rate and burst; failures, window, reset). (The key names belong with
the others in :class:`corral.fleet.redis.Keys`; they are here until that module is free to
change.)

**Breakers** (:class:`RedisBreakers`) are read-modify-writes of one key under ``WATCH`` /
``MULTI`` around the pure :func:`~corral._limits.ask` and :func:`~corral._limits.record`
(retried when another process wrote the key meanwhile), so the state machine is the tested
one. Breakers live in coordinators (the scheduler's gate), which see every attempt of their
run wherever it ran. One rule exists only here: a half-open breaker whose probes have not
reported for :data:`LOST_PROBE_S` (or ``reset``, if longer) forgets them — the run of a probe
may have died, and nothing else would ever let another probe through.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from corral._errors import CorralError
from corral._limits import (
    Breaker,
    BreakerState,
    BreakerStatus,
    RateLimit,
    RateState,
    Verdict,
    ask,
    record,
)

__all__ = ["FleetLimits", "RedisBreakers", "RedisRates", "SharedBreakers", "ask_step",
           "record_step", "shared_flow", "status_from", "status_json", "worker_limits"]

DECLARATIONS_TTL_S = 7 * 86_400  # a run's declarations outlive any run's workers
CALLER_CLOCK_TTL_MS = 86_400_000  # a TAT on a caller's (fake) clock: its expiry cannot be known
RUNS_KEPT = 64  # runs whose declarations a worker keeps
BREAKER_TTL_S = 86_400  # a breaker untouched this long is closed again (or longer: see _ttl)
LOST_PROBE_S = 60.0  # a half-open breaker's probes silent this long are taken for lost

# GCRA over KEYS (one per limit), all or none. ARGV: now ("" = the server's TIME), how late
# the caller is for its due time ("" = not due), the TTL in ms ("" = until the TAT is an
# interval in the past), then interval and tolerance per key. Returns {1} (taken) or
# {0, delay}: how long from now until all would conform.
_GCRA = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local due = nil
if ARGV[2] ~= '' then due = now - tonumber(ARGV[2]) end
local retry = nil
local new = {}
for k = 1, #KEYS do
  local interval = tonumber(ARGV[2 + 2 * k])
  local tolerance = tonumber(ARGV[3 + 2 * k])
  local tat = tonumber(redis.call('GET', KEYS[k]) or '')
  if tat and now < tat - tolerance then
    if not retry or tat - tolerance > retry then retry = tat - tolerance end
  else
    local at = now
    if due and due <= now and now < due + interval then at = due end
    if tat and tat > at then at = tat end
    new[k] = {at + interval, interval}
  end
end
if retry then return {0, string.format('%.17g', retry - now)} end
for k = 1, #KEYS do
  local ttl = ARGV[3]
  if ttl == '' then ttl = math.ceil((new[k][1] - now + new[k][2]) * 1000) + 1 end
  redis.call('SET', KEYS[k], string.format('%.17g', new[k][1]), 'PX', ttl)
end
return {1}
"""


class RedisRates:
    """A :class:`~corral._limits.RateState` in Redis (see the module's note). Thread-safe:
    redis-py's pool gives each thread a connection."""

    def __init__(self, client: Any, limits: Mapping[str, RateLimit], *, prefix: str = "corral:",
                 server_time: bool = True, url: str = "redis") -> None:
        self.limits = dict(limits)
        self.prefix = prefix
        self.server_time = server_time
        self.url = url  # to name the broker in errors (without a password)
        self._client = client
        self._script = client.register_script(_GCRA)

    def key(self, name: str) -> str:
        return f"{self.prefix}rl:{name}"

    def try_acquire(
        self, names: Sequence[str], now: float, due: float | None = None
    ) -> float | None:
        argv: list[str | float] = [
            "" if self.server_time else repr(now),
            "" if due is None else repr(now - due),
            "" if self.server_time else str(CALLER_CLOCK_TTL_MS),
        ]
        for name in names:
            limit = self.limits[name]
            argv += [repr(limit.interval), repr(limit.tolerance)]
        with _talking(self.url, "take a rate limit"):
            reply = self._script(keys=[self.key(n) for n in names], args=argv)
        if int(reply[0]) == 1:
            return None
        return now + max(0.0, float(reply[1]))

    def publish(self, run_id: str) -> None:
        """Write the run's declarations where its workers find them (:class:`FleetLimits`)."""
        if not self.limits:
            return
        key = f"{self.prefix}limits:{run_id}"
        with _talking(self.url, "record the run's rate limits"):
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(key, mapping={name: json.dumps({"rate": lim.rate, "burst": lim.burst,
                                                      "text": lim.text})
                                    for name, lim in self.limits.items()})
            pipe.expire(key, DECLARATIONS_TTL_S)
            pipe.execute()


Resolver = Callable[[str], tuple[RateState, Callable[[], float]]]


class FleetLimits:
    """A worker's view of the limits of the runs whose attempts it runs: for each run, a
    :class:`RedisRates` of its declarations (read from Redis the first time a task of the run
    calls ``corral.limit``), for :data:`corral._throttle.current`. :meth:`_rates` keeps the
    runs; :meth:`_load` reads one (PostgreSQL's subclass: from its tables)."""

    def __init__(self, client: Any, *, prefix: str = "corral:", url: str = "redis") -> None:
        self._client = client
        self.prefix = prefix
        self.url = url
        self._runs: OrderedDict[str, Any] = OrderedDict()  # run -> its RateState, .limits
        self._lock = threading.Lock()

    def resolver(self, run_id: str) -> Resolver:
        """How ``corral.limit(name)`` in a task of run ``run_id`` finds its limit."""

        def resolve(name: str) -> tuple[RateState, Callable[[], float]]:
            rates = self._rates(run_id)
            if name not in rates.limits:
                declared = ", ".join(sorted(rates.limits)) or "none"
                raise CorralError(f"corral.limit({name!r}): run {run_id} declares no rate limit "
                                  f"{name!r} (it declares {declared})")
            return rates, time.monotonic

        return resolve

    def _rates(self, run_id: str) -> Any:
        with self._lock:
            found = self._runs.get(run_id)
            if found is not None:
                self._runs.move_to_end(run_id)
                return found
        rates = self._load(run_id)
        with self._lock:
            self._runs[run_id] = rates
            while len(self._runs) > RUNS_KEPT:
                self._runs.popitem(last=False)
        return rates

    def _load(self, run_id: str) -> Any:
        """The run's declarations, as a RateState with ``limits`` (other brokers: override)."""
        with _talking(self.url, "read the run's rate limits"):
            raw = self._client.hgetall(f"{self.prefix}limits:{run_id}")
        limits = {}
        for name, value in raw.items():
            doc = json.loads(value)
            limits[name.decode()] = RateLimit(float(doc["rate"]), int(doc["burst"]),
                                              str(doc.get("text", "")))
        return RedisRates(self._client, limits, prefix=self.prefix, url=self.url)


def _client_of(broker: object) -> tuple[Any, str, str] | None:
    """A Redis client on the broker's server, its key prefix and its URL (None: the broker
    is not a Redis one)."""
    url = getattr(broker, "url", "")
    keys = getattr(broker, "keys", None)
    prefix = getattr(keys, "prefix", None)
    if not isinstance(url, str) or not isinstance(prefix, str) \
            or url.partition("://")[0].lower() not in ("redis", "rediss", "unix"):
        return None
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30), \
        prefix, url


def shared_flow(
    broker: object, limits: Mapping[str, RateLimit], run_id: str, *, breakers: bool
) -> tuple[RedisRates | None, RedisBreakers | None]:
    """The fleet-wide state of a run's rate ``limits`` (its declarations published for the
    workers; None if it declares none) and of its breakers (None unless ``breakers``) on
    ``broker``'s Redis; (None, None) when the broker is not a Redis one."""
    found = _client_of(broker) if limits or breakers else None
    if found is None:
        return None, None
    client, prefix, url = found
    rates = None
    if limits:
        rates = RedisRates(client, limits, prefix=prefix, url=url)
        rates.publish(run_id)
    book = RedisBreakers(client, prefix=prefix, url=url) if breakers else None
    return rates, book


def worker_limits(broker: object) -> FleetLimits | None:
    """What a worker on ``broker`` gives its tasks for ``corral.limit`` (None: not Redis)."""
    found = _client_of(broker)
    if found is None:
        return None
    client, prefix, url = found
    return FleetLimits(client, prefix=prefix, url=url)


class SharedBreakers:
    """A :class:`~corral._limits.BreakerBook` kept on a server: the pure steps
    (:func:`ask_step`, :func:`record_step`) applied atomically by ``_update``, which each
    server does its own way, on the server's clock; answers come back on the caller's."""

    shared = True

    def ask(self, name: str, cfg: Breaker, now: float) -> tuple[Verdict, BreakerStatus, bool]:
        (verdict, new, probe), t = self._update(name, cfg, now, ask_step(cfg))
        if verdict is not None and not math.isinf(verdict.until):
            verdict = type(verdict)(now + (verdict.until - t))  # on the caller's clock
        return verdict, new, probe

    def record(self, name: str, cfg: Breaker, now: float, ok: bool | None, *,
               probe: bool) -> BreakerStatus:
        new, _ = self._update(name, cfg, now, record_step(cfg, ok, probe))
        result: BreakerStatus = new
        return result

    def _update(self, name: str, cfg: Breaker, now: float, step: Step) -> tuple[Any, float]:
        raise NotImplementedError


class RedisBreakers(SharedBreakers):
    """A :class:`~corral._limits.BreakerBook` in Redis (see the module's note)."""

    shared = True

    def __init__(self, client: Any, *, prefix: str = "corral:", server_time: bool = True,
                 url: str = "redis") -> None:
        self._client = client
        self.prefix = prefix
        self.server_time = server_time
        self.url = url

    def key(self, name: str) -> str:
        return f"{self.prefix}br:{name}"

    def _update(self, name: str, cfg: Breaker, now: float,
                step: Callable[[BreakerStatus, float], tuple[BreakerStatus, Any]]
                ) -> tuple[Any, float]:
        """Apply ``step`` to the breaker's status atomically (WATCH/MULTI, again when another
        process wrote it meanwhile); its result and the time it was applied at."""
        import redis

        key = self.key(name)
        ttl = max(BREAKER_TTL_S, math.ceil(cfg.window + 2 * cfg.reset))
        with _talking(self.url, "update a circuit breaker"), self._client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if self.server_time:
                        sec, usec = pipe.time()
                        t = sec + usec / 1e6
                    else:
                        t = now
                    old = status_from(raw)
                    new, result = step(old, t)
                    pipe.multi()
                    if new != old:
                        pipe.set(key, status_json(new), ex=ttl)
                    pipe.execute()
                    return result, t
                except redis.WatchError:
                    continue


Step = Callable[[BreakerStatus, float], tuple[BreakerStatus, Any]]


def ask_step(cfg: Breaker) -> Step:
    """A shared book's :func:`~corral._limits.ask` on a status read at ``t``: the new status
    and ``(verdict, new, probe)`` (times on the book's clock). Lost probes are forgotten."""

    def step(st: BreakerStatus, t: float) -> tuple[BreakerStatus, Any]:
        verdict, new, probe = ask(cfg, _without_lost_probes(cfg, st, t), t)
        return new, (verdict, new, probe)

    return step


def record_step(cfg: Breaker, ok: bool | None, probe: bool) -> Step:
    """A shared book's :func:`~corral._limits.record`: the new status, twice."""

    def step(st: BreakerStatus, t: float) -> tuple[BreakerStatus, Any]:
        new = record(cfg, st, t, ok, probe=probe)
        if new.probes < 0:  # a probe reporting after it was taken for lost
            new = BreakerStatus(new.state, new.recent, new.opened_at, 0, new.passed)
        return new, new

    return step


def _without_lost_probes(cfg: Breaker, st: BreakerStatus, t: float) -> BreakerStatus:
    """A half-open breaker forgets probes silent past LOST_PROBE_S (or reset, if longer)."""
    if st.state is BreakerState.HALF_OPEN and st.probes > 0 \
            and t >= st.opened_at + cfg.reset + max(cfg.reset, LOST_PROBE_S):
        return BreakerStatus(st.state, st.recent, t - cfg.reset, 0, st.passed)
    return st


def status_from(raw: bytes | str | None) -> BreakerStatus:
    if raw is None:
        return BreakerStatus()
    doc = json.loads(raw)
    return BreakerStatus(BreakerState(doc["state"]), tuple(map(float, doc["recent"])),
                         float(doc["opened_at"]), int(doc["probes"]), int(doc["passed"]))


def status_json(st: BreakerStatus) -> str:
    return json.dumps({"state": str(st.state), "recent": list(st.recent),
                       "opened_at": st.opened_at, "probes": st.probes, "passed": st.passed})


def _talking(url: str, what: str) -> AbstractContextManager[None]:
    """redis errors become :class:`~corral.errors.BrokenBroker` (corral.fleet._broker)."""
    import redis

    from corral.fleet._broker import broker_errors

    return broker_errors(url, what, redis.RedisError)
