"""The Broker protocol: what the fleet asks of the service that carries its messages.

A broker holds one queue per ``queue:`` name, a reply stream per coordinator session, the
workers' registry and a dead-letter queue. Every operation that must be atomic (finish an
attempt: its END posted, it marked done and its entry acknowledged) is one call here, so that
each broker makes it one transaction, script or MULTI::

    coordinator                 broker                        worker
    enqueue(messages) ────────> queue ──claim / reclaim────> runs it
    read_events(reply) <─────── reply <──post(START, OUTPUT, BEAT)
                                      <──finish(END; done; ack)
    cancel(ids) ──────────────> marks ──states(ids)────────> stops it
                                       <──renew(held)          (the holder is alive)
                                dead letters <──dead_letter(claimed, history)

Two brokers implement it, with one conformance suite (``tests/conformance/broker/``): Redis
Streams (:mod:`corral.fleet.redis`) and PostgreSQL tables (:mod:`corral.fleet.postgres`).
Brokers are found by URL scheme (:data:`SCHEMES`, :func:`open_broker`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from corral._errors import BrokenBroker
from corral.fleet._protocol import AttemptMessage, Event

__all__ = [
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "Broker",
    "Claimed",
    "DeadLetter",
    "WorkerInfo",
    "broker_errors",
    "open_broker",
    "safe_url",
]


DEFAULT_HEARTBEAT_TIMEOUT = 10.0  # seconds a worker may go silent before its work is reclaimed


@dataclass(frozen=True, slots=True)
class Claimed:
    """An attempt a worker holds: its queue, its entry there, how often it was handed out,
    and ``target``: the worker whose own queue holds the entry (an attempt a balancing
    strategy sent to that worker, maybe reclaimed by another since), None for the shared one."""

    queue: str
    entry: str
    message: AttemptMessage
    deliveries: int = 1
    target: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker, as it registers itself (and renews, with each beat)."""

    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    resources: Mapping[str, float] = field(default_factory=dict)
    running: int = 0
    done: int = 0  # attempts it finished since it started
    started_at: float = 0.0  # epoch seconds
    last_beat: float = 0.0  # epoch seconds
    state: str = "running"  # running | stopping | gone (missed its beats)
    failed: int = 0  # of ``done``, those that ended in an error
    busy_s: float = 0.0  # seconds its finished attempts ran, summed (their mean: busy_s / done)
    weight: int = 1  # its share under the ``weighted`` balancing strategy (--weight)
    # Its recent attempts, what its health is judged on (corral.fleet._window): those that
    # finished in the last ``window_s`` seconds. window_s 0: it reports none (an older corral).
    window_s: float = 0.0
    recent_done: int = 0
    recent_failed: int = 0
    recent_busy_s: float = 0.0
    pool: str | None = None  # the pool that started it (corral worker --min-workers); None: none

    def fields(self) -> dict[str, str]:
        """The row as text fields (a Redis hash): all but its id."""
        return {"host": self.host, "pid": str(self.pid), "queues": ",".join(self.queues),
                "concurrency": str(self.concurrency), "running": str(self.running),
                "done": str(self.done), "started_at": f"{self.started_at:.3f}",
                "last_beat": f"{self.last_beat:.3f}", "state": self.state,
                "failed": str(self.failed), "busy_s": f"{self.busy_s:.3f}",
                "weight": str(self.weight), "window_s": f"{self.window_s:g}",
                "recent_done": str(self.recent_done), "recent_failed": str(self.recent_failed),
                "recent_busy_s": f"{self.recent_busy_s:.3f}", "pool": self.pool or "",
                "resources": ",".join(f"{k}={v:g}" for k, v in self.resources.items())}

    @classmethod
    def from_fields(cls, worker: str, f: Mapping[str, str], state: str) -> WorkerInfo:
        """The row of :meth:`fields` (those a broker of an older corral wrote: their
        defaults), with the ``state`` the broker judged."""
        resources = {k: float(v) for k, _, v in (pair.partition("=") for pair in
                                                 f.get("resources", "").split(",") if pair)}
        return cls(
            id=worker, host=f.get("host", ""), pid=int(f.get("pid", 0)),
            queues=tuple(q for q in f.get("queues", "").split(",") if q),
            concurrency=int(f.get("concurrency", 0)), resources=resources,
            running=int(f.get("running", 0)), done=int(f.get("done", 0)),
            started_at=float(f.get("started_at", 0)), last_beat=float(f.get("last_beat", 0)),
            state=state, failed=int(f.get("failed", 0)), busy_s=float(f.get("busy_s", 0)),
            weight=int(f.get("weight", 1)), window_s=float(f.get("window_s", 0)),
            recent_done=int(f.get("recent_done", 0)),
            recent_failed=int(f.get("recent_failed", 0)),
            recent_busy_s=float(f.get("recent_busy_s", 0)), pool=f.get("pool") or None)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An attempt given up on: its message, why, and what each delivery ended with."""

    id: str  # the dead-letter entry's id
    attempt: str
    run_id: str
    task_id: str
    queue: str
    reason: str
    history: tuple[str, ...]
    at: float  # epoch seconds
    message: AttemptMessage | None = None  # None when listing without bodies


class Broker(Protocol):
    """What the coordinator and the workers do through a broker. Methods are synchronous
    and may block (``block_s``); callers keep them off their event loop."""

    url: str
    heartbeat_timeout: float

    def epoch(self) -> str:
        """Who the broker is: changes when it lost its data (a restart without persistence)."""
        ...

    # -- the coordinator
    def enqueue(self, messages: Sequence[AttemptMessage]) -> None:
        """Queue ``messages`` (in one round trip where the broker can). A message with a
        ``worker`` is claimed by that worker only, until it is gone (silent past the heartbeat
        timeout, stopping, or stopped): then any worker of its queue may take it."""

    def read_events(self, reply: str, after: str, *, block_s: float,
                    count: int) -> tuple[str, list[Event]]:
        """Events on ``reply`` after position ``after`` ("0": from the start), waiting up to
        ``block_s`` for the first; returns the new position and the events."""
        ...

    def drop_reply(self, reply: str) -> None:
        """Forget a reply stream (the coordinator is done with it)."""

    def cancel(self, attempts: Sequence[str]) -> None:
        """Ask whoever runs these attempts to stop them, and anyone yet to to skip them."""

    def acquire_lease(self, run_id: str, holder: str, ttl_s: float) -> int:
        """Become the run's one coordinator for ``ttl_s`` (renewed with :meth:`renew_lease`);
        returns the fencing token. Raises :class:`~corral.errors.BrokenBroker` when a live
        coordinator holds it."""
        ...

    def renew_lease(self, run_id: str, holder: str, ttl_s: float) -> bool:
        """Extend the lease; False if ``holder`` lost it."""
        ...

    def release_lease(self, run_id: str, holder: str) -> None: ...

    # -- the workers
    def claim(self, consumer: str, queues: Sequence[str], count: int, *,
              block_s: float) -> list[Claimed]:
        """Up to ``count`` new attempts from ``queues`` (those sent to ``consumer`` itself,
        and those for any worker), waiting up to ``block_s``."""
        ...

    def reclaim(self, consumer: str, queues: Sequence[str], count: int) -> list[Claimed]:
        """Up to ``count`` attempts whose holder went silent past the heartbeat timeout (or
        handed them back), now held by ``consumer``; ``deliveries`` counts this one. Attempts
        sent to a worker that is gone and not yet claimed become free for any worker."""
        ...

    def renew(self, consumer: str, held: Sequence[Claimed]) -> list[Claimed]:
        """Say ``consumer`` still holds ``held``; returns those it no longer holds."""
        ...

    def hand_back(self, consumer: str, held: Sequence[Claimed]) -> None:
        """Give attempts up without an outcome: the next reclaim takes them at once."""

    def states(self, attempts: Sequence[str]) -> list[str | None]:
        """For each attempt: "done" (finished), "cancelled", or None (to run)."""
        ...

    def post(self, events: Sequence[tuple[str, Event]]) -> None:
        """Post (reply stream, event) pairs: starts, output, beats."""

    def finish(self, done: Sequence[tuple[Claimed, Event]],
               events: Sequence[tuple[str, Event]] = ()) -> None:
        """Post ``events`` (as :meth:`post`, before the ENDs: an attempt's last output), then
        for each (attempt, END event), atomically: post the END, mark the attempt done,
        acknowledge (and drop) its entry. An attempt is acknowledged only so. One round trip
        where the broker can."""

    def skip(self, claimed: Sequence[Claimed]) -> None:
        """Acknowledge attempts that are not to run (already done, or cancelled)."""

    def dead_letter(self, claimed: Claimed, reason: str, history: Sequence[str],
                    end: Event) -> None:
        """Move an attempt to the dead-letter queue with why and its history, and post its
        END (an error) to the run, atomically."""

    def register(self, info: WorkerInfo) -> None:
        """Register or renew a worker (it counts as gone after the heartbeat timeout)."""

    def deregister(self, worker: str) -> None: ...

    def workers(self) -> list[WorkerInfo]: ...

    def queue_depth(self, queues: Sequence[str]) -> int:
        """Attempts queued on ``queues`` that no worker holds (a pool's demand); one handed
        back counts again once a worker's reclaim takes it."""
        ...

    def saturation(self) -> float:
        """How full the broker's server is, 0..1: the share of its connections in use, or of
        its memory limit, whichever is higher (workers slow down above 0.85:
        :mod:`corral.fleet._backpressure`)."""
        ...

    # -- the dead-letter queue
    def dead_letters(self, *, count: int = 1000) -> list[DeadLetter]: ...

    def dead_letter_entry(self, entry: str) -> DeadLetter | None: ...

    def retry_dead_letter(self, entry: str) -> AttemptMessage | None:
        """Queue a dead letter's attempt again (its delivery count starts over)."""
        ...

    def purge_dead_letters(self, entries: Sequence[str] | None = None) -> int:
        """Drop these dead letters (None: all); returns how many went."""
        ...

    def close(self) -> None: ...


# The built-in schemes, by the "module:attr" of the broker class that serves them (imported
# when first used: the registry names its brokers without importing them, so the brokers'
# modules import this one and not the other way round).
SCHEMES: dict[str, str] = {
    "redis": "corral.fleet.redis:RedisBroker",
    "rediss": "corral.fleet.redis:RedisBroker",
    "unix": "corral.fleet.redis:RedisBroker",
    "postgresql": "corral.fleet.postgres:PostgresBroker",
    "postgres": "corral.fleet.postgres:PostgresBroker",
}
URL_FORMS = "redis://HOST:PORT/DB or postgresql://[USER@]HOST:PORT/DB"


def open_broker(url: str, *, heartbeat_timeout: float | None = None) -> Broker:
    """The broker at ``url`` (``redis://host:port/db``, ``rediss://``, ``unix://``,
    ``postgresql://user@host:port/db``), connected and checked: its class (by the URL's
    scheme, :data:`SCHEMES`) ``.connect(url, heartbeat_timeout=...)``. Raises
    :class:`~corral.errors.BrokenBroker` when it cannot be used (a wrong URL, unreachable, the
    client library missing), and ``ValueError`` for a heartbeat timeout that is not
    positive."""
    import importlib

    scheme = url.partition("://")[0].lower() if "://" in url else ""
    where = SCHEMES.get(scheme)
    if where is None:
        raise BrokenBroker(f"not a broker URL: {safe_url(url)!r} (expected {URL_FORMS})")
    module, _, attr = where.partition(":")
    broker: Broker = getattr(importlib.import_module(module), attr).connect(
        url, heartbeat_timeout=heartbeat_timeout)
    return broker


def safe_url(url: str) -> str:
    """``url`` without its password, to show."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


@contextlib.contextmanager
def broker_errors(
    url: str, what: str, errors: type[Exception] | tuple[type[Exception], ...]
) -> Iterator[None]:
    """The client library's ``errors`` become :class:`BrokenBroker` naming the broker (its
    password hidden) and what failed, the original as cause."""
    try:
        yield
    except errors as exc:
        raise BrokenBroker(f"the broker at {safe_url(url)} failed to {what}: "
                           f"{type(exc).__name__}: {exc}") from exc
