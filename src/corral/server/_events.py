"""Live events: an in-process hub fanning run transitions out to Server-Sent Events streams.

::

    Runner ──transitions(batch)──> ServerListener ──publish──> EventHub ──> Subscription (one
                                   (corral.server._runs)       │ per-run    per open stream)
                                                               │ buffers     ──> run_stream()
                                                               └ ring of the ──> all_stream()
                                                                 last N events      (bytes)
    Store (transitions table) ─────── replay for runs not live here ──> run_stream()

Event ids, so that a client reconnecting with ``Last-Event-ID`` misses nothing:

- On a run's stream (``/runs/{id}/events``) the id of a transition is its ordinal in the run's
  history, 1, 2, 3... The store keeps the same history in the same order (the recorder writes
  every batch, in order), so a replay after id *k* is "the transitions after the k-th": from
  the hub's buffer while the run is live here, else from the store, for ever. A run executing
  in another process (``corral run``) is followed by polling the store.
- On the all-runs stream (``/events``) ids are ``<epoch>-<n>``: a counter of this server
  process. The last ``history`` events are kept; a client whose id is older than that, or from
  an earlier server process, gets a ``reset`` event telling it to reload what it shows.

Event types: ``run`` (a run's status, sent first on a run's stream and when a run starts),
``transition`` (a task changed state), ``end`` (the run finished; a run's stream closes after
it) and ``reset``. ``run`` and ``end`` carry no id on a run's stream, so they never move a
client's position.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.store import StoredRun, TransitionRecord

__all__ = ["Event", "EventHub", "Subscription", "all_stream", "run_stream", "transition_event"]

# How many events a slow subscriber may fall behind before its stream is closed (it then
# reconnects with its last id and is replayed what it missed: nothing is lost, memory is bounded).
QUEUE_LIMIT = 20_000
# Reconnection delay suggested to EventSource clients, in milliseconds.
RETRY_MS = 1000


@dataclass(slots=True)
class Event:
    """One event. ``seq`` is a transition's ordinal in its run; ``gid`` its place in the hub."""

    kind: str
    run_id: str
    data: dict[str, Any]
    seq: int | None = None
    gid: int = 0
    _json: str | None = field(default=None, repr=False)

    def payload(self) -> str:
        if self._json is None:
            self._json = json.dumps(self.data, separators=(",", ":"), default=str)
        return self._json

    def encode(self, event_id: str | None) -> str:
        head = f"id: {event_id}\n" if event_id is not None else ""
        return f"{head}event: {self.kind}\ndata: {self.payload()}\n\n"


def transition_event(run_id: str, seq: int, task: str, state: str, attempt: int, clock: float,
                     at: datetime, error: str | None) -> Event:
    return Event("transition", run_id, {
        "run_id": run_id, "seq": seq, "task": task, "state": state, "attempt": attempt,
        "clock": round(clock, 6), "at": at.isoformat(), "error": error}, seq=seq)


def stored_event(run_id: str, seq: int, t: TransitionRecord) -> Event:
    return transition_event(run_id, seq, t.task_id, str(t.state), t.attempt, t.clock, t.at,
                            t.error)


class Subscription:
    """The receiving end of one stream. For the hub: :meth:`push`; for streams: :meth:`next`."""

    def __init__(self, run_id: str | None, replay: list[Event], *, reset: bool = False) -> None:
        self.run_id = run_id
        self.replay = replay
        self.reset = reset
        self.position = 0  # the hub's counter when this subscription began (for a reset)
        self.overflowed = False
        self.closed = False
        self._pending: deque[Event] = deque()
        self._wake = asyncio.Event()

    def push(self, events: Iterable[Event]) -> None:
        if self.overflowed:
            return
        self._pending.extend(events)
        if len(self._pending) > QUEUE_LIMIT:
            self.overflowed = True
            self._pending.clear()
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def next(self, timeout: float) -> list[Event] | None:
        """The events that arrived since the last call; [] when closed or overflowed (end the
        stream), None when ``timeout`` passed with nothing (send a keep-alive)."""
        if not self._pending and not (self.closed or self.overflowed):
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return None
        self._wake.clear()
        out = list(self._pending)
        self._pending.clear()
        return out


class _Live:
    __slots__ = ("events", "subscribers")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.subscribers: set[Subscription] = set()


class EventHub:
    """Holds the events of the runs live in this process, and the latest events of all runs.

    Publishing methods are called on the event loop by the run listener; subscribing methods by
    request handlers, on the same loop, so a subscription's replay and its live events meet
    without a gap or an overlap.
    """

    def __init__(self, *, history: int = 50_000) -> None:
        self.epoch = secrets.token_hex(4)
        self._gid = 0
        self._recent: deque[Event] = deque(maxlen=history)
        self._live: dict[str, _Live] = {}
        self._all: set[Subscription] = set()
        self.on_subscribers: Callable[[int], None] = lambda n: None

    # ------------------------------------------------------------------ publishing
    def is_live(self, run_id: str) -> bool:
        return run_id in self._live

    def open_run(self, run_id: str, data: dict[str, Any]) -> None:
        self._live[run_id] = _Live()
        self._broadcast(run_id, [Event("run", run_id, data)], keep=False)

    def publish(self, run_id: str, events: list[Event]) -> None:
        self._broadcast(run_id, events, keep=True)

    def finish_run(self, run_id: str, data: dict[str, Any]) -> None:
        """Publish the run's end, close its streams and forget its buffer (the store has it)."""
        if run_id not in self._live:
            return
        self._broadcast(run_id, [Event("end", run_id, data)], keep=False)
        live = self._live.pop(run_id)
        for sub in live.subscribers:
            sub.close()
        self._count()

    def _broadcast(self, run_id: str, events: list[Event], *, keep: bool) -> None:
        for ev in events:
            self._gid += 1
            ev.gid = self._gid
        self._recent.extend(events)
        live = self._live.get(run_id)
        if live is not None:
            if keep:
                live.events.extend(events)
            for sub in live.subscribers:
                sub.push(events)
        for sub in self._all:
            sub.push(events)

    def close(self) -> None:
        """Server shutdown: end every stream."""
        for live in self._live.values():
            for sub in live.subscribers:
                sub.close()
        for sub in self._all:
            sub.close()

    # ------------------------------------------------------------------ subscribing
    def subscribe_run(self, run_id: str, after: int) -> Subscription | None:
        """A live run's transitions after ordinal ``after``, then its live events; None when
        the run is not live here (read it from the store)."""
        live = self._live.get(run_id)
        if live is None:
            return None
        sub = Subscription(run_id, live.events[after:])
        live.subscribers.add(sub)
        self._count()
        return sub

    def subscribe_all(self, last_id: str | None) -> Subscription:
        """Every run's events after ``last_id`` (an ``<epoch>-<n>`` id), then live ones."""
        replay: list[Event] = []
        reset = False
        if last_id:
            epoch, _, n = last_id.partition("-")
            after = int(n) if n.isdigit() else -1
            oldest = self._recent[0].gid if self._recent else self._gid + 1
            if epoch != self.epoch or after < 0 or after > self._gid or after + 1 < oldest:
                reset = True
            else:
                replay = [ev for ev in self._recent if ev.gid > after]
        sub = Subscription(None, replay, reset=reset)
        sub.position = self._gid
        self._all.add(sub)
        self._count()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.run_id is None:
            self._all.discard(sub)
        else:
            live = self._live.get(sub.run_id)
            if live is not None:
                live.subscribers.discard(sub)
        self._count()

    def global_id(self, ev: Event) -> str:
        return f"{self.epoch}-{ev.gid}"

    def _count(self) -> None:
        self.on_subscribers(len(self._all) + sum(len(v.subscribers) for v in self._live.values()))


# ---------------------------------------------------------------------------- streams


def _prelude() -> str:
    return f"retry: {RETRY_MS}\n\n"


def run_status_data(stored: StoredRun) -> dict[str, Any]:
    """A stored run's status; ``live`` is False for a run nobody executes any more."""
    run = stored.run
    return {"run_id": run.id, "pipeline": run.pipeline, "status": str(run.status),
            "live": run.finished_at is None and run.lease_live,
            "started_at": run.started_at.isoformat(),
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "transitions": len(stored.transitions)}


async def run_stream(
    hub: EventHub,
    run_id: str,
    after: int,
    *,
    stored: StoredRun | None,
    reload: Callable[[], Awaitable[StoredRun]],
    finished: Callable[[StoredRun], Awaitable[dict[str, Any]]],
    keepalive: float,
    poll: float,
) -> AsyncIterator[str]:
    """One run's stream: from the hub while the run is live here, else from the store
    (``stored`` as the route read it, ``await reload()`` for news while the run goes on in
    another process, ``await finished(stored)`` for what its ``end`` carries besides its
    status, as the live one does: counts, critical path, duration)."""
    # Subscribed here, not in the route: a stream that never starts leaves nothing behind.
    sub = hub.subscribe_run(run_id, after)
    if sub is not None:
        try:
            yield _prelude()
            yield Event("run", run_id, {"run_id": run_id, "status": "running",
                                        "live": True}).encode(None)
            if sub.replay:
                yield "".join(ev.encode(str(ev.seq)) for ev in sub.replay)
            while True:
                batch = await sub.next(keepalive)
                if batch is None:
                    yield ": keep-alive\n\n"
                    continue
                if batch:
                    yield "".join(ev.encode(str(ev.seq) if ev.seq is not None else None)
                                  for ev in batch)
                if any(ev.kind == "end" for ev in batch) or sub.closed or sub.overflowed:
                    return
        finally:
            hub.unsubscribe(sub)
    yield _prelude()
    if stored is None:  # it was live when the route looked, and has ended since
        stored = await reload()
    yield Event("run", run_id, run_status_data(stored)).encode(None)
    sent = after
    idle = 0.0
    while True:
        news = stored.transitions[sent:]
        if news:
            yield "".join(stored_event(run_id, sent + k + 1, t).encode(str(sent + k + 1))
                          for k, t in enumerate(news))
            sent += len(news)
            idle = 0.0
        status = run_status_data(stored)
        if not status["live"]:
            yield Event("end", run_id, {**status, **await finished(stored)}).encode(None)
            return
        await asyncio.sleep(poll)
        idle += poll
        if idle >= keepalive:
            yield ": keep-alive\n\n"
            idle = 0.0
        stored = await reload()


async def all_stream(hub: EventHub, last_id: str | None, *,
                     keepalive: float) -> AsyncIterator[str]:
    """Every run's events after ``last_id``, each with an ``<epoch>-<n>`` id."""
    sub = hub.subscribe_all(last_id)
    try:
        yield _prelude()
        if sub.reset:
            yield Event("reset", "", {"reason": "the last event id is unknown or too old: "
                                      "reload the runs"}).encode(f"{hub.epoch}-{sub.position}")
        if sub.replay:
            yield "".join(ev.encode(hub.global_id(ev)) for ev in sub.replay)
        while True:
            batch = await sub.next(keepalive)
            if batch is None:
                yield ": keep-alive\n\n"
                continue
            if batch:
                yield "".join(ev.encode(hub.global_id(ev)) for ev in batch)
            if sub.closed or sub.overflowed:
                return
    finally:
        hub.unsubscribe(sub)


def wall(start: datetime, clock: float) -> datetime:
    return start + timedelta(seconds=clock)
