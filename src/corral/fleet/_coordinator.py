"""The coordinator's side of the fleet: one :class:`FleetSession` per run, shared by the
run's fleet executors (one per executor name the tasks use).

The run loop never waits on the broker: ``send`` and ``cancel`` drop work on a list that the
*sender* thread pushes in batches (one pipeline per batch), and the *reader* thread reads the
session's reply stream and hands each event to the executor that sent the attempt::

    run loop ──send(message)──> sender thread ──enqueue (batched XADD)──> broker queues
        ^                          └── renews the run's lease (fenced: one coordinator per run)
        └── sink / started / beat / log <── reader thread <── read_events(reply) <── workers

Queues with a balancing strategy other than ``pull`` (``queues:`` in the pipeline,
:mod:`corral.fleet._balance`): the sender picks a worker for each of their attempts from the
live workers serving the queue (the registry, read at most every ``REFRESH_S``) and the
attempts it sent each and has not seen end, and sends the attempt to that worker only; with no
live worker, to the shared queue.

Backpressure: about once a second (``PRESSURE_S``, on the sender thread, never per attempt)
the session reads how full the broker's server is and, when it was given one, the store's
connection pool, and turns the higher into a factor with the workers' policy
(:mod:`corral.fleet._backpressure`). Each fleet executor's ``slots`` are the run's concurrency
times that factor: above 85 % the scheduler admits fewer attempts to the fleet, and as many as
before once it falls under 75 %. It says so on stderr when it starts and stops slowing down.

What it keeps of each attempt in flight is its message: should the broker lose its data (a
Redis restarted without persistence: its identity changed), the session sends every attempt
it has not seen finish again. A duplicate END (an attempt that ran twice, its worker having
been written off) finds no attempt waiting and is dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from corral._errors import BrokenBroker
from corral.fleet._backpressure import BackpressurePolicy, factor
from corral.fleet._balance import PULL, BalanceState, Candidate, choose
from corral.fleet._broker import Broker, WorkerInfo, open_broker
from corral.fleet._protocol import BEAT, AttemptMessage, Event

if TYPE_CHECKING:
    from corral.store._connector import PoolStats

__all__ = ["FleetSession", "Receiver"]

READ_BLOCK_S = 0.5  # the reader's longest wait (closing wakes it at once: see close)
RENEW_DUE_S = 0.5  # while attempts flow, the lease is renewed at most this often (not per batch)
READ_BATCH = 1000
RETRY_S = (0.1, 0.2, 0.5, 1.0, 2.0)  # back-off between attempts to reach a broker that failed
REFRESH_S = 0.5  # balanced queues: the workers' registry is read at most this often
PRESSURE_S = 1.0  # how often the broker's saturation (and the store pool's) is read


class Receiver:
    """What the session calls for an attempt's events (implemented by the fleet executor)."""

    def on_event(self, message: AttemptMessage, event: Event) -> bool:
        """Handle one event; True when it ended the attempt (an END)."""
        raise NotImplementedError


class FleetSession:
    """A run's connection to the fleet. Make it with :meth:`connect` (which checks the broker
    and takes the run's lease), :meth:`open` it before the first ``send``, :meth:`close` it
    after the last. Thread-safe. ``balance``: queue -> strategy, for the queues whose attempts
    are pushed to a worker of the sender's choosing (``pull``, the default, for the others);
    ``rng``: the ``random`` strategy's generator. ``pressure``: the backpressure policy (None:
    admit as many whatever the broker's saturation); ``pool_stats``: reads the run's store's
    connection pool (its saturation counts as the broker's; None: no pool)."""

    def __init__(self, broker: Broker, run_id: str, *, lease_s: float = 30.0,
                 balance: Mapping[str, str] | None = None,
                 rng: random.Random | None = None,
                 pressure: BackpressurePolicy | None = BackpressurePolicy(),  # noqa: B008
                 pool_stats: Callable[[], PoolStats | None] | None = None) -> None:
        self.broker = broker
        self.run_id = run_id
        self.token = uuid.uuid4().hex[:12]  # this session: in every attempt id and its reply
        self.reply = f"{run_id}:{self.token}"
        self.lease_s = lease_s
        self.fence = 0
        self._lock = threading.Condition()
        self._outbox: list[AttemptMessage] = []
        self._cancels: list[str] = []
        self._inflight: dict[str, tuple[AttemptMessage, Receiver]] = {}
        self._threads: list[threading.Thread] = []
        self._users = 0
        self._closing = False
        self._epoch = ""
        self._renew_due = 0.0  # time.monotonic() after which a push renews the lease
        self.start_delays: list[float] | None = None
        """Set it to a list (a benchmark does) to have each attempt's delay from admission
        (its :meth:`send`) to its start on a worker appended, in seconds: the worker's wall
        clock less ours, so true on one host (or with clocks kept in step)."""
        self._admitted: dict[str, float] = {}  # attempt -> time.time() at send, while recording
        self.balance = {q: s for q, s in (balance or {}).items() if s != PULL}
        rng = rng or random.Random()
        self._states = {q: BalanceState(rng) for q in self.balance}
        self._live: list[WorkerInfo] = []  # running workers, as last read
        self._live_at = float("-inf")  # time.monotonic() of that read
        self._target: dict[str, str] = {}  # attempt -> the worker it was sent to, until it ends
        self._sent_to: dict[str, int] = {}  # worker -> attempts sent there that have not ended
        self.pressure = pressure
        self._pool_stats = pool_stats
        self.factor = 1.0
        """The share of their capacity the fleet executors admit (backpressure), 0.1..1."""
        self._factor_watchers: list[Callable[[], None]] = []
        self._pressure_due = 0.0  # time.monotonic() after which the sender reads it again
        self._pushed_at = 0.0  # time.monotonic() of the sender's last push

    @classmethod
    def connect(cls, url: str, run_id: str, **options: Any) -> FleetSession:
        """Connect to the broker at ``url`` (``options``: the constructor's): raises
        :class:`~corral.errors.BrokenBroker` (nothing started) when it cannot be used."""
        return cls(open_broker(url), run_id, **options)

    def watch_factor(self, watcher: Callable[[], None]) -> None:
        """Call ``watcher()`` (from the sender's thread) each time :attr:`factor` changes."""
        self._factor_watchers.append(watcher)

    def warn_unserved(self, queues: set[str]) -> None:
        """Say on stderr which of ``queues`` no live worker takes from: their attempts will
        wait until one starts (not an error: workers may come later)."""
        try:
            live = [w for w in self.broker.workers() if w.state == "running"]
        except BrokenBroker:
            return
        served = {q for w in live for q in w.queues}
        for queue in sorted(queues - served):
            print(f"corral: no worker takes queue {queue!r} yet: its attempts wait for one "
                  f"(corral worker --broker URL --queue {queue})", file=sys.stderr)

    # ------------------------------------------------------------------ life
    def open(self) -> None:
        """Take the run's lease and start the threads (once, however many executors share
        the session; each :meth:`open` is matched by a :meth:`close`)."""
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
        try:
            self.fence = self.broker.acquire_lease(self.run_id, self.token, self.lease_s)
            self._epoch = self.broker.epoch()
        except BaseException:
            with self._lock:
                self._users -= 1
            self.broker.close()
            raise
        self._renew_due = time.monotonic() + min(RENEW_DUE_S, self.lease_s / 3)  # just taken
        if self.pressure is not None:  # before the first attempt is admitted
            self._read_pressure()
        for target, name in ((self._send_loop, "sender"), (self._read_loop, "reader")):
            thread = threading.Thread(target=target, name=f"corral-fleet-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def close(self) -> None:
        """Stop the threads; attempts still in flight are cancelled on the fleet."""
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            self._closing = True
            leftover = list(self._inflight)
            self._inflight.clear()
            self._cancels.extend(leftover)
            self._lock.notify_all()
        with contextlib.suppress(BrokenBroker):  # wake the reader from its blocking read
            self.broker.post([(self.reply, Event(BEAT, "", ""))])
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        with contextlib.suppress(BrokenBroker):
            self.broker.cancel(self._cancels)
            self.broker.drop_reply(self.reply)
            self.broker.release_lease(self.run_id, self.token)
        self.broker.close()

    # ------------------------------------------------------------------ run loop side
    def attempt_id(self, index: int, attempt: int) -> str:
        return f"{self.token}:{index}:{attempt}"

    def send(self, message: AttemptMessage, receiver: Receiver) -> None:
        if self.start_delays is not None:
            self._admitted[message.id] = time.time()
        with self._lock:
            self._inflight[message.id] = (message, receiver)
            self._outbox.append(message)
            if len(self._outbox) == 1:
                self._lock.notify_all()

    def cancel(self, attempt: str) -> None:
        """Forget ``attempt`` and tell the fleet to stop it (or never start it)."""
        with self._lock:
            if self._inflight.pop(attempt, None) is None:
                return
            if self._target:
                self._untarget(attempt)
            self._cancels.append(attempt)
            self._lock.notify_all()

    # ------------------------------------------------------------------ threads
    def _send_loop(self) -> None:
        renew_every = self.lease_s / 3
        idle = renew_every if self.pressure is None else min(renew_every, PRESSURE_S)
        while True:
            with self._lock:
                if not (self._outbox or self._cancels or self._closing):
                    self._lock.wait(idle)
                if self._closing:
                    return
                batch, self._outbox = self._outbox, []
                cancels, self._cancels = self._cancels, []
            now = time.monotonic()
            if batch or cancels or now - self._pushed_at >= renew_every:
                self._pushed_at = now
                if not self._persist(functools.partial(self._push, batch, cancels),
                                     "send attempts"):
                    with self._lock:  # closed meanwhile: close() sends these cancels itself
                        self._cancels[:0] = cancels
            if self.pressure is not None and time.monotonic() >= self._pressure_due:
                self._read_pressure()

    def _read_pressure(self) -> None:
        """Read how full the broker and the store's pool are, at most every ``PRESSURE_S``;
        tell the watchers when the factor moves, and stderr when it starts or stops slowing
        the run down. A broker that cannot answer now leaves the factor as it was (sending
        is where its failure is dealt with)."""
        assert self.pressure is not None
        self._pressure_due = time.monotonic() + PRESSURE_S
        try:
            saturation, what = self.broker.saturation(), "the broker is {:.0%} full"
        except BrokenBroker:
            return
        stats = self._pool_stats() if self._pool_stats is not None else None
        if stats is not None and stats.saturation > saturation:
            saturation = stats.saturation
            what = "the store's connection pool is {:.0%} in use"
        was, self.factor = self.factor, factor(self.pressure, saturation, self.factor)
        if self.factor == was:
            return
        if was == 1.0:
            print(f"corral: {what.format(saturation)}: admitting {self.factor:.0%} of the "
                  "attempts the fleet could take", file=sys.stderr)
        elif self.factor == 1.0:
            print(f"corral: {what.format(saturation)}: admitting as many attempts as before",
                  file=sys.stderr)
        for watcher in self._factor_watchers:
            watcher()

    def _push(self, batch: list[AttemptMessage], cancels: list[str]) -> None:
        broker = self.broker
        if self.balance:
            batch = self._route(batch)
        broker.enqueue(batch)
        broker.cancel(cancels)
        now = time.monotonic()
        if now < self._renew_due:
            return
        self._renew_due = now + min(RENEW_DUE_S, self.lease_s / 3)
        if not broker.renew_lease(self.run_id, self.token, self.lease_s):
            # Silent past its lease, or the broker forgot it (restarted without its data: then
            # what we sent is gone too). Take the lease again, or learn who has it: a
            # fenced-out coordinator stops here.
            self._check_epoch()
            self.fence = broker.acquire_lease(self.run_id, self.token, self.lease_s)

    def _route(self, batch: list[AttemptMessage]) -> list[AttemptMessage]:
        """The batch, each attempt of a balanced queue sent to the worker its strategy
        chooses among the live workers of the queue (none: left to the shared queue)."""
        now = time.monotonic()
        if now - self._live_at >= REFRESH_S:
            self._live = [w for w in self.broker.workers() if w.state == "running"]
            self._live_at = now
        routed = []
        with self._lock:
            for m in batch:
                strategy = self.balance.get(m.queue)
                if strategy is None or m.id not in self._inflight:  # or cancelled meanwhile
                    routed.append(m)
                    continue
                self._untarget(m.id)  # sent again (the broker lost it): chosen afresh
                sent = self._sent_to
                # A worker's load: what we sent it and have not seen end, or what it last said
                # it runs (other runs' attempts too), whichever is more.
                candidates = [Candidate(w.id, w.concurrency, max(sent.get(w.id, 0), w.running),
                                        w.weight)
                              for w in self._live if m.queue in w.queues]
                worker = choose(strategy, candidates, self._states[m.queue])
                if worker is not None:
                    self._target[m.id] = worker
                    sent[worker] = sent.get(worker, 0) + 1
                    m = dataclasses.replace(m, worker=worker)
                routed.append(m)
        return routed

    def _untarget(self, attempt: str) -> None:
        """``attempt`` ended or was given up: no longer counted against its worker (lock
        held)."""
        worker = self._target.pop(attempt, None)
        if worker is not None:
            left = self._sent_to[worker] - 1
            if left:
                self._sent_to[worker] = left
            else:
                del self._sent_to[worker]

    def _read_loop(self) -> None:
        position = "0"
        while not self._closing:
            try:
                position, events = self.broker.read_events(
                    self.reply, position, block_s=READ_BLOCK_S, count=READ_BATCH)
            except BrokenBroker as exc:
                self._recover(exc, "read events")
                continue
            if events:
                self._dispatch(events)

    def _dispatch(self, events: list[Event]) -> None:
        """Hand a batch of events to the executors that sent their attempts (the lock taken
        twice per batch, not per event). An event of an attempt no longer in flight (written
        off, a duplicate) is dropped; so is a second END of one attempt in the same batch, by
        its executor, which no longer knows the attempt."""
        inflight = self._inflight
        with self._lock:
            held = [inflight.get(event.attempt) for event in events]
        delays, admitted = self.start_delays, self._admitted
        ended = []
        for event, pair in zip(events, held, strict=True):
            if pair is None:
                continue
            message, receiver = pair
            if delays is not None and event.at is not None:
                sent_at = admitted.pop(event.attempt, None)
                if sent_at is not None:  # the first START (or END) of the attempt
                    delays.append(event.at - sent_at)
            try:
                if receiver.on_event(message, event):
                    ended.append(event.attempt)
            except Exception as exc:  # a bug: say so, and go on with the others
                print(f"corral: event {event.kind} of attempt {event.attempt} could not "
                      f"be handled: {type(exc).__name__}: {exc}", file=sys.stderr)
        if ended:
            with self._lock:
                for attempt in ended:
                    inflight.pop(attempt, None)
                if self._target:
                    for attempt in ended:
                        self._untarget(attempt)

    def _persist(self, action: Callable[[], Any], what: str) -> bool:
        """Run ``action`` until it succeeds (the broker may be restarting) or we close;
        True if it ran."""
        while not self._closing:
            try:
                action()
                return True
            except BrokenBroker as exc:
                self._recover(exc, what)
        return False

    def _recover(self, exc: BaseException, what: str) -> None:
        """The broker failed: wait for it, and if it lost its data, send again every attempt
        in flight (their queues and our reply stream went with it)."""
        print(f"corral: the fleet's broker failed to {what}, retrying: {exc}", file=sys.stderr)
        for delay in itertools.chain(RETRY_S, itertools.repeat(RETRY_S[-1])):
            with self._lock:
                if self._closing:
                    return
                self._lock.wait(delay)
            try:
                self._check_epoch()
            except BrokenBroker:
                continue
            return

    def _check_epoch(self) -> None:
        """If the broker lost its data since we last looked, queue every attempt in flight
        again (the first END of each wins; a duplicate is ignored)."""
        epoch = self.broker.epoch()
        if epoch == self._epoch:
            return
        self._epoch = epoch
        with self._lock:
            queued = {m.id for m in self._outbox}
            again = [m for m, _ in self._inflight.values() if m.id not in queued]
            self._outbox[:0] = again
            self._lock.notify_all()
        print(f"corral: the broker restarted without its data: sending the {len(again)} "
              "attempts in flight again", file=sys.stderr)

