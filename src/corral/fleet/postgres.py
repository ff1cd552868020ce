"""The PostgreSQL broker: queues are rows of one table, claimed with ``FOR UPDATE SKIP LOCKED``.

Tables, in a schema of their own (``corral_fleet``, or ``?schema=NAME`` in the URL: several
fleets on one database), made and upgraded by the store's migration mechanism
(:mod:`corral.store._schema`, the scripts in ``sql/postgres/``; :mod:`._pg_schema`); the
statements are named in ``sql/postgres/queries.sql``::

    jobs          attempts to run, a row each until finished; a held row has its worker and
                  renewed_at (the holder's last beat, on the server's clock)
    events        the coordinators' reply streams (START, OUTPUT, BEAT, END; a START's and an
                  END's ``started``: Event.at, the worker's clock), deleted once read
    marks         attempts done, or cancelled by their coordinator (a day)
    dead_letters  the attempt, why, its history
    workers       each worker's heartbeat row (listed for an hour)
    leases        one coordinator per run, with fencing tokens
    meta          the broker's epoch (made with the schema)

How an attempt moves (a worker's view)::

    enqueue: INSERT, NOTIFY ──claim: UPDATE ... SKIP LOCKED──> held by A ──finish, one statement:
                                                 │   INSERT its END, mark it done, DELETE the row
          A renews its rows every beat           │
          (renewed_at = now()) ──────────────────┤ A goes silent past the heartbeat timeout
                                                 └──reclaim: renewed_at < now() - timeout,
                                                    SKIP LOCKED ──> worker B (deliveries + 1)

A live worker renews every row it holds every few seconds, so a long attempt on a live worker
is never reclaimed, however long it runs; a dead worker's rows go to the next worker that
reclaims after the heartbeat timeout (10 s by default, as for Redis). Each operation of the
:class:`~corral.fleet._broker.Broker` protocol is one statement (data-modifying CTEs): one
transaction, one round trip, batches as arrays (``unnest``).

Waiting: ``claim`` and ``read_events`` wait on ``LISTEN``/``NOTIFY`` (:mod:`._pg_listen`),
never polling busily; while the listening connection is down they re-query every ``block_s``.
Connections come from a small pool (``psycopg_pool``) of autocommit connections whose
``search_path`` is the broker's schema; one the server ended fails one operation (a
:class:`~corral.errors.BrokenBroker`, which workers and coordinators retry) and is replaced.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

from corral._errors import BrokenBroker
from corral.fleet._broker import (
    DEFAULT_HEARTBEAT_TIMEOUT,
    Claimed,
    DeadLetter,
    WorkerInfo,
    safe_url,
)
from corral.fleet._pg_listen import Listener
from corral.fleet._pg_schema import SCHEMA_NAME, migrate, quiet_driver_logs, split_schema
from corral.fleet._protocol import END, AttemptMessage, Event

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["PROCESS_CONNECTIONS", "PostgresBroker"]

INSTALL_HINT = "the fleet's PostgreSQL broker needs psycopg: pip install 'corral[postgres]'"
# A worker's three broker threads (claimer, keeper, reporter) or a coordinator's two
# (sender, reader), and one for the command line's calls; the listener has its own.
POOL_SIZE = 4
PROCESS_CONNECTIONS = POOL_SIZE + 1  # and the listening one: what a process may hold at most
CONNECT_TIMEOUT_S = 5
POOL_WAIT_S = 10.0  # a pool that cannot give a connection this long: the broker is down


class PostgresBroker:
    """The :class:`~corral.fleet._broker.Broker` over PostgreSQL tables (PostgreSQL >= 12;
    tested on 15). Thread-safe: each call takes a pooled connection. Make one with
    :meth:`connect`."""

    def __init__(self, pool: ConnectionPool[Any], url: str, *, conninfo: str, schema: str,
                 heartbeat_timeout: float, connect_kw: Mapping[str, Any]) -> None:
        import psycopg

        from corral.store._connector import load_queries

        self._pool = pool
        self._errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        self._q = load_queries("postgres", package="corral.fleet")
        self.url = url
        self.schema = schema
        self.heartbeat_timeout = heartbeat_timeout
        self._jobs = f"{schema}.jobs"  # the NOTIFY channels
        self._events = f"{schema}.events"
        def connect() -> psycopg.Connection[Any]:
            return psycopg.connect(conninfo, **connect_kw)

        self._connect = connect
        self._listener = Listener(self._connect, (self._jobs, self._events))
        self._unread: dict[str, list[int]] = {}  # reply -> events read, not deleted yet

    @classmethod
    def connect(cls, url: str, *, heartbeat_timeout: float | None = None) -> Self:
        """Connect to the database at ``url``, make or upgrade the broker's schema, and check
        it answers; raises :class:`~corral.errors.BrokenBroker` with the reason otherwise."""
        timeout = DEFAULT_HEARTBEAT_TIMEOUT if heartbeat_timeout is None else heartbeat_timeout
        if not timeout > 0:
            raise ValueError(f"the heartbeat timeout must be > 0 seconds, not {timeout}")
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise BrokenBroker(INSTALL_HINT) from exc
        quiet_driver_logs()
        shown = safe_url(url)
        conninfo, schema = split_schema(url)
        if not SCHEMA_NAME.fullmatch(schema):
            raise BrokenBroker(f"not a usable PostgreSQL broker URL: {shown} (?schema= takes "
                               "a lower-case name: letters, digits and '_', up to 48)")
        try:
            given = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise BrokenBroker(f"not a usable PostgreSQL broker URL: {shown} ({exc})") from exc
        # Named in pg_stat_activity (unless the URL names them): whose connections these are.
        connect_kw: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S}
        if "application_name" not in given:
            connect_kw["application_name"] = f"corral-fleet:{schema}"
        try:
            first = psycopg.connect(conninfo, **connect_kw)
        except psycopg.Error as exc:
            raise BrokenBroker(f"cannot reach the broker at {shown}: "
                               f"{type(exc).__name__}: {_said(exc)}") from exc
        try:
            migrate(first, schema, shown)
        except psycopg.Error as exc:
            raise BrokenBroker(f"the broker at {shown} could not make its schema {schema!r}: "
                               f"{type(exc).__name__}: {_said(exc)}") from exc
        finally:
            first.close()

        def configure(conn: psycopg.Connection[Any]) -> None:
            conn.execute("SELECT set_config('search_path', %s, false)", (schema,))

        pool: ConnectionPool[Any] = ConnectionPool(
            conninfo, min_size=1, max_size=POOL_SIZE, timeout=POOL_WAIT_S, open=False,
            kwargs=connect_kw, configure=configure, name="corral-broker")
        try:
            pool.open(wait=True, timeout=POOL_WAIT_S)
        except Exception as exc:  # PoolTimeout: the server went away meanwhile
            pool.close()
            raise BrokenBroker(f"cannot reach the broker at {shown}: "
                               f"{type(exc).__name__}: {exc}") from exc
        return cls(pool, url, conninfo=conninfo, schema=schema, heartbeat_timeout=timeout,
                   connect_kw=connect_kw)

    def close(self) -> None:
        self._listener.close()
        with contextlib.suppress(Exception):
            self._pool.close()

    # ------------------------------------------------------------------ talking
    @contextlib.contextmanager
    def _talking(self, what: str) -> Iterator[None]:
        """psycopg errors become :class:`BrokenBroker`, with the original as ``__cause__``.
        A missing table (the schema was dropped) has the schema made again, empty, for the
        next call: its epoch is new, so coordinators queue what they have in flight again,
        as after a Redis restarted without its data."""
        try:
            yield
        except self._errors as exc:
            from psycopg import errors

            if isinstance(exc, errors.UndefinedTable):
                self._remake()
            raise BrokenBroker(f"the broker at {safe_url(self.url)} failed to {what}: "
                               f"{type(exc).__name__}: {_said(exc)}") from exc

    def _remake(self) -> None:
        self._unread.clear()  # their rows went with the schema
        with contextlib.suppress(*self._errors), self._connect() as conn:
            migrate(conn, self.schema, safe_url(self.url))

    def _rows(self, what: str, query: str, params: Mapping[str, Any], *,
              durable: bool = True) -> list[tuple[Any, ...]]:
        """Run the named statement (one transaction: the connection autocommits); its rows.

        Not ``durable``: the commit does not wait for the WAL to reach the disk (a few ms
        here, the cost of most operations). For what a crash of the server may lose without
        harm: a claim or renewal (the row is claimed again, or reclaimed), a heartbeat, the
        deletion of events read (read again: duplicates are ignored). Queuing, outcomes,
        dead letters, cancellations and leases wait for the disk."""
        with self._talking(what), self._pool.connection() as conn:
            if durable:
                cur = conn.execute(self._q[query], params)
            else:
                with conn.pipeline(), conn.transaction():  # one round trip
                    conn.execute("SET LOCAL synchronous_commit TO off")
                    cur = conn.execute(self._q[query], params)
            return cur.fetchall() if cur.description is not None else []

    def _count(self, what: str, query: str, params: Mapping[str, Any]) -> int:
        """Run the named statement; how many rows it changed."""
        with self._talking(what), self._pool.connection() as conn:
            return int(conn.execute(self._q[query], params).rowcount)

    def _wait_for(self, what: str, query: str, params: Mapping[str, Any],
                  keys: Sequence[tuple[str, str]], block_s: float, *,
                  durable: bool = True) -> list[tuple[Any, ...]]:
        """The named statement's rows, waiting up to ``block_s`` for a notification on
        ``keys`` while it finds none."""
        deadline = time.monotonic() + block_s
        while True:
            seen = self._listener.seen(keys)
            rows = self._rows(what, query, params, durable=durable)
            left = deadline - time.monotonic()
            if rows or left <= 0:
                return rows
            self._listener.wait(keys, seen, left)

    def epoch(self) -> str:
        return str(self._rows("say who it is", "epoch", {})[0][0])

    # ------------------------------------------------------------------ coordinator
    def enqueue(self, messages: Sequence[AttemptMessage]) -> None:
        if not messages:
            return
        self._rows("queue attempts", "enqueue", {
            "queue": [m.queue for m in messages], "attempt": [m.id for m in messages],
            "run_id": [m.run_id for m in messages], "task_id": [m.task_id for m in messages],
            "executor": [m.executor for m in messages], "reply": [m.reply for m in messages],
            "body": [m.body for m in messages],
            "resources": [_json(m.resources) for m in messages],
            "max_value": [m.max_value_bytes for m in messages],
            "target": [m.worker for m in messages], "channel": self._jobs})

    def read_events(self, reply: str, after: str, *, block_s: float,
                    count: int) -> tuple[str, list[Event]]:
        # Rows are read, then deleted by their seq: a reply's rows are all read, whatever the
        # order their transactions committed in (a seq is no position to resume from).
        pending = self._unread.get(reply, [])
        rows = self._wait_for("read events", "read_events",
                              {"reply": reply, "pending": pending, "count": count},
                              [(self._events, reply)], block_s)
        if not rows:
            return after, []
        seqs = pending + [r[0] for r in rows]
        try:
            self._rows("forget read events", "forget_events", {"seqs": seqs}, durable=False)
            self._unread.pop(reply, None)
        except BrokenBroker:  # not deleted: left out of the next reads until they are
            self._unread[reply] = seqs
        return str(rows[-1][0]), [Event(kind, attempt, worker, bytes(data), started)
                                  for _, kind, attempt, worker, data, started in rows]

    def drop_reply(self, reply: str) -> None:
        self._rows("drop a reply stream", "drop_reply", {"reply": reply})
        self._unread.pop(reply, None)

    def cancel(self, attempts: Sequence[str]) -> None:
        if attempts:
            self._rows("cancel attempts", "cancel", {"attempts": list(attempts)})

    def acquire_lease(self, run_id: str, holder: str, ttl_s: float) -> int:
        params = {"run_id": run_id, "holder": holder, "ttl": float(ttl_s)}
        rows = self._rows("take the run's lease", "acquire_lease", params)
        if not rows:
            found = self._rows("read the run's lease", "lease_holder", params)
            other = found[0][0] if found else "?"
            raise BrokenBroker(f"run {run_id} already has a live coordinator ({other}): one "
                               "coordinator per run")
        # Once per run: drop what Redis would have expired (old marks, unread events, leases).
        self._rows("tidy up", "tidy", {})
        return int(rows[0][0])

    def renew_lease(self, run_id: str, holder: str, ttl_s: float) -> bool:
        return bool(self._rows("renew the run's lease", "renew_lease",
                               {"run_id": run_id, "holder": holder, "ttl": float(ttl_s)}))

    def release_lease(self, run_id: str, holder: str) -> None:
        self._rows("release the run's lease", "release_lease",
                   {"run_id": run_id, "holder": holder})

    # ------------------------------------------------------------------ workers
    def claim(self, consumer: str, queues: Sequence[str], count: int, *,
              block_s: float) -> list[Claimed]:
        rows = self._wait_for("claim attempts", "claim",
                              {"queues": list(queues), "count": count, "worker": consumer},
                              [(self._jobs, q) for q in queues], block_s, durable=False)
        return _claimed(rows)

    def reclaim(self, consumer: str, queues: Sequence[str], count: int) -> list[Claimed]:
        params = {"queues": list(queues), "count": count, "worker": consumer,
                  "timeout": float(self.heartbeat_timeout)}
        self._rows("free attempts sent to gone workers", "free_targets",
                   {**params, "channel": self._jobs}, durable=False)
        return _claimed(self._rows("reclaim attempts", "reclaim", params, durable=False))

    def renew(self, consumer: str, held: Sequence[Claimed]) -> list[Claimed]:
        if not held:
            return []
        kept = {r[0] for r in self._rows("renew held attempts", "renew",
                                         {"ids": _ids(held), "worker": consumer},
                                         durable=False)}
        return [c for c in held if int(c.entry) not in kept]

    def hand_back(self, consumer: str, held: Sequence[Claimed]) -> None:
        if held:
            self._rows("hand attempts back", "hand_back", {"ids": _ids(held), "worker": consumer},
                       durable=False)

    def states(self, attempts: Sequence[str]) -> list[str | None]:
        if not attempts:
            return []
        marks = dict(self._rows("read attempt states", "states", {"attempts": list(attempts)}))
        return [None if (done := marks.get(a)) is None else "done" if done else "cancelled"
                for a in attempts]

    def post(self, events: Sequence[tuple[str, Event]]) -> None:
        if events:
            self._rows("post events", "post", {**_events(events), "channel": self._events})

    def finish(self, done: Sequence[tuple[Claimed, Event]],
               events: Sequence[tuple[str, Event]] = ()) -> None:
        if not done:
            self.post(events)
            return
        posts = [*events, *((c.message.reply, end) for c, end in done)]
        self._rows("record outcomes", "finish", {
            **_events(posts), "channel": self._events,
            "done": sorted({c.message.id for c, _ in done}),  # sorted: no deadlock between two
            "ids": _ids([c for c, _ in done])})

    def skip(self, claimed: Sequence[Claimed]) -> None:
        if claimed:
            self._rows("acknowledge skipped attempts", "skip", {"ids": _ids(claimed)})

    def dead_letter(self, claimed: Claimed, reason: str, history: Sequence[str],
                    end: Event) -> None:
        m = claimed.message
        self._rows("dead-letter an attempt", "dead_letter", {
            "id": int(claimed.entry), "attempt": m.id, "run_id": m.run_id,
            "task_id": m.task_id, "queue": m.queue, "executor": m.executor, "reply": m.reply,
            "body": m.body, "resources": _json(m.resources), "max_value": m.max_value_bytes,
            "reason": reason, "history": json.dumps(list(history)),
            "deliveries": claimed.deliveries, "kind": END, "worker": end.worker,
            "data": end.data, "started": end.at, "channel": self._events})

    def register(self, info: WorkerInfo) -> None:
        self._rows("register a worker", "register", {
            "id": info.id, "host": info.host, "pid": info.pid, "queues": list(info.queues),
            "concurrency": info.concurrency, "resources": json.dumps(dict(info.resources)),
            "running": info.running, "done": info.done, "started_at": info.started_at,
            "last_beat": info.last_beat, "state": info.state, "failed": info.failed,
            "busy_s": info.busy_s, "weight": info.weight, "window_s": info.window_s,
            "recent_done": info.recent_done, "recent_failed": info.recent_failed,
            "recent_busy_s": info.recent_busy_s, "pool": info.pool}, durable=False)

    def deregister(self, worker: str) -> None:
        self._rows("deregister a worker", "deregister", {"id": worker})

    def workers(self) -> list[WorkerInfo]:
        now = time.time()
        out = []
        for (worker, host, pid, queues, concurrency, resources, running, done, started_at,
             last, state, failed, busy_s, weight, window_s, recent_done, recent_failed,
             recent_busy_s, pool) in self._rows("list workers", "workers", {}):
            if state != "stopped" and now - last > self.heartbeat_timeout:
                state = "gone"
            out.append(WorkerInfo(
                id=worker, host=host, pid=pid, queues=tuple(queues), concurrency=concurrency,
                resources={k: float(v) for k, v in resources.items()}, running=running,
                done=done, started_at=started_at, last_beat=last, state=state,
                failed=failed, busy_s=busy_s, weight=weight, window_s=window_s,
                recent_done=recent_done, recent_failed=recent_failed,
                recent_busy_s=recent_busy_s, pool=pool))
        return out

    def queue_depth(self, queues: Sequence[str]) -> int:
        """Attempts queued on ``queues`` that no worker holds yet (a pool's demand)."""
        rows = self._rows("count queued attempts", "queue_depth", {"queues": list(queues)})
        return int(rows[0][0])

    def saturation(self) -> float:
        rows = self._rows("say how full it is", "saturation", {})
        return min(1.0, float(rows[0][0]))

    # ------------------------------------------------------------------ dead letters
    def dead_letters(self, *, count: int = 1000) -> list[DeadLetter]:
        return [_dead_letter(row) for row in
                self._rows("list dead letters", "dead_letters", {"count": count})]

    def dead_letter_entry(self, entry: str) -> DeadLetter | None:
        if not _is_id(entry):
            return None
        rows = self._rows("read a dead letter", "dead_letter_entry", {"id": int(entry)})
        return _dead_letter(rows[0]) if rows else None

    def retry_dead_letter(self, entry: str) -> AttemptMessage | None:
        if not _is_id(entry):
            return None
        rows = self._rows("queue a dead letter again", "retry_dead_letter",
                          {"id": int(entry), "channel": self._jobs})
        return _message(*rows[0][:9]) if rows else None

    def purge_dead_letters(self, entries: Sequence[str] | None = None) -> int:
        ids = [int(e) for e in entries or () if _is_id(e)]
        if entries is not None and not ids:
            return 0
        return self._count("purge dead letters", "purge_dead_letters",
                           {"all": entries is None, "ids": ids})


def _said(exc: BaseException) -> str:
    """What the driver said, on one line (the server's hints come on lines of their own)."""
    return " ".join(str(exc).split())


def _json(mapping: Mapping[str, float] | None) -> str | None:
    return json.dumps(dict(mapping)) if mapping else None


def _ids(claimed: Sequence[Claimed]) -> list[int]:
    return sorted({int(c.entry) for c in claimed})


def _is_id(entry: str) -> bool:
    return entry.isascii() and entry.isdigit() and int(entry) < 2**63


def _events(events: Sequence[tuple[str, Event]]) -> dict[str, list[Any]]:
    """(reply, event) pairs as the arrays a statement unnests, in order."""
    return {"reply": [r for r, _ in events], "kind": [e.kind for _, e in events],
            "attempt": [e.attempt for _, e in events], "worker": [e.worker for _, e in events],
            "data": [e.data for _, e in events], "started": [e.at for _, e in events]}


def _message(attempt: str, run_id: str, task_id: str, queue: str, executor: str, reply: str,
             body: bytes, resources: Mapping[str, float] | None,
             max_value: int, worker: str | None = None) -> AttemptMessage:
    return AttemptMessage(id=attempt, run_id=run_id, task_id=task_id, queue=queue,
                          executor=executor, reply=reply, body=bytes(body),
                          resources=resources or None, max_value_bytes=max_value,
                          worker=worker)


def _claimed(rows: Sequence[tuple[Any, ...]]) -> list[Claimed]:
    """Claimed rows, in the order they were queued (RETURNING has none of its own)."""
    out = []
    for entry, queue, attempt, run_id, task_id, executor, reply, body, resources, max_value, \
            deliveries, target in sorted(rows):
        message = _message(attempt, run_id, task_id, queue, executor, reply, body, resources,
                           max_value, target)
        out.append(Claimed(queue, str(entry), message, deliveries=deliveries, target=target))
    return out


def _dead_letter(row: tuple[Any, ...]) -> DeadLetter:
    entry, attempt, run_id, task_id, queue, reason, history, at, *rest = row
    message = None
    if rest:
        executor, reply, body, resources, max_value = rest
        message = _message(attempt, run_id, task_id, queue, executor, reply, body, resources,
                           max_value)
    return DeadLetter(id=str(entry), attempt=attempt, run_id=run_id, task_id=task_id,
                      queue=queue, reason=reason, history=tuple(history), at=float(at),
                      message=message)
