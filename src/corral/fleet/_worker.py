"""The ``corral worker`` loop: take attempts from queues, run them, report, acknowledge.

A worker runs each attempt with its own local executor of the name the task uses (``thread``,
``async``, ``process``, ``shell``: the same code that runs it in ``corral run``), on an
asyncio loop; three threads talk to the broker so that the loop never waits on it::

    claimer ──claim(free slots), and every beat reclaim silent ones──> admit: skip
        │       done/cancelled, dead-letter over-delivered ──> loop: load body (imports),
    keeper (every beat): renew held, register           fit resources, executor.submit(work)
                                                      │
                                                      v
    reporter (every tick): START, OUTPUT (the log's new bytes), BEAT; cancelled? stop it;
        outcomes: the log's last bytes, then finish(END + done + ack) in one script

Slots: the worker holds at most ``concurrency`` attempts (claimed, waiting for resources, or
running), so nothing it claims waits long, and a worker that dies takes at most that many
attempts with it. What it holds is renewed every beat (a quarter of the heartbeat timeout), so
another worker reclaims it only once this one has been silent past the timeout.

Stopping (SIGINT/SIGTERM): it claims nothing more, lets what runs finish for ``grace``
seconds, then stops the rest and hands them back (the next reclaim takes them at once); a
second signal hands everything back at once. A pool's worker (``supervisor``: the pool's pid)
stops so too when its pool dies, however it died: the kernel sends it SIGTERM
(:func:`corral.fleet._orphan.die_with_parent`, Linux), and every beat it looks whether its
parent is still the pool (anywhere), so that no worker outlives its pool.

Its health figures: what it finished, over its life and in a window of the last minutes
(:mod:`corral.fleet._window`), registered with every beat.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral import _capture, _throttle
from corral._errors import BrokenBroker, BrokenExecutor, CommandFailed, WorkerCrashed
from corral.executors._base import ERROR, STARTED, Executor, ExecutorSettings, WatchedWork, Work
from corral.fleet._backpressure import BackpressurePolicy, factor
from corral.fleet._broker import Broker, Claimed, WorkerInfo
from corral.fleet._orphan import orphaned
from corral.fleet._protocol import (
    BEAT,
    DEFAULT_MAX_VALUE_BYTES,
    DEFAULT_QUEUE,
    END,
    OUTPUT,
    START,
    AttemptBody,
    Event,
    dump_outcome,
)
from corral.fleet._window import DEFAULT_WINDOW_S, RecentWindow
from corral.fleet.limits import worker_limits

__all__ = ["Worker", "WorkerOptions"]

RETRY_S = (0.1, 0.2, 0.5, 1.0, 2.0)


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """How a worker works. ``resources``: what it offers besides its CPUs and memory (which
    it offers as the machine has them); an attempt runs here only if they fit.
    ``max_deliveries``: an attempt handed out more often than this (each worker holding it
    went silent) goes to the dead-letter queue. ``tick``: how often output and beats are sent
    and cancellations looked for."""

    queues: tuple[str, ...] = (DEFAULT_QUEUE,)
    concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)
    resources: Mapping[str, float] = field(default_factory=dict)
    max_deliveries: int = 3
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    grace: float = 10.0
    tick: float = 0.2
    weight: int = 1  # its share under the ``weighted`` balancing strategy
    health_window: float = DEFAULT_WINDOW_S  # its recent figures' span (its health's)
    pool: str | None = None  # the id of the pool that started it (None: none)
    supervisor: int | None = None  # the pool's pid: gone (we are orphaned), we stop

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {self.concurrency}")
        if not self.queues:
            raise ValueError("a worker needs at least one queue")
        if self.max_deliveries < 1:
            raise ValueError(f"max_deliveries must be >= 1, not {self.max_deliveries}")
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, not {self.weight}")
        if not self.health_window > 0:
            raise ValueError(f"health_window must be > 0, not {self.health_window}")


class _Running:
    """An attempt this worker runs."""

    __slots__ = ("beaten", "body", "claimed", "log_path", "log_pos", "resources", "started",
                 "work")

    def __init__(self, claimed: Claimed, body: AttemptBody, log_path: Path | None,
                 resources: Mapping[str, float]) -> None:
        self.claimed = claimed
        self.body = body
        self.work: Work = None  # type: ignore[assignment]  # set at once, by the launcher
        self.resources = resources
        self.log_path = log_path
        self.log_pos = 0
        self.beaten = False
        self.started = time.time()  # launched here (epoch s): its START's and END's ``at``,
        # and the worker's busy time (its health: mean latency)

    def beat(self) -> None:
        self.beaten = True

    def read_log(self) -> str:
        """What the attempt wrote since the last read."""
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_pos)
                data = f.read()
        except OSError:
            return ""
        self.log_pos += len(data)
        return data.decode("utf-8", errors="replace")


class Worker:
    """One worker process's loop over a broker. :meth:`run` until :meth:`stop`."""

    def __init__(self, broker: Broker, options: WorkerOptions | None = None, *,
                 worker_id: str | None = None,
                 saturation: Callable[[], float] | None = None) -> None:
        from corral._graph import default_capacity

        self.broker = broker
        self.options = opts = options or WorkerOptions()
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.offer = {**default_capacity(), **opts.resources}
        self.beat_every = min(broker.heartbeat_timeout / 4, 2.5)
        self.started_at = time.time()
        self.done = 0
        self.failed = 0  # of done, ended in an error (its health: the error rate)
        self.busy_s = 0.0  # seconds its finished attempts ran
        self.recent = RecentWindow(opts.health_window)  # the same, lately (its health's)
        self._lock = threading.Condition()
        self._held = 0  # attempts claimed and not yet ended: never above concurrency
        self._running: dict[str, _Running] = {}
        self._waiting: collections.deque[tuple[Claimed, AttemptBody]] = collections.deque()
        self._in_use: dict[str, float] = {}
        self._starts: list[tuple[str, Event]] = []
        self._ends: list[tuple[_Running | Claimed, int, Any]] = []
        self._back: list[Claimed] = []
        self._executors: dict[str, Executor] = {}
        self._by_index: dict[int, _Running] = {}
        self._functions: dict[bytes, Any] = {}  # the tasks' functions, by their pickle
        self._index = itertools.count()
        self._stopping = False
        self._next_cancel_check = 0.0  # cancellations are looked for once per tick
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._logs = Path(tempfile.mkdtemp(prefix="corral-worker-"))
        self._limits = worker_limits(broker)  # corral.limit in tasks: the runs' shared state
        self._saturation = saturation or broker.saturation  # a seam: tests set it
        self._pressure = BackpressurePolicy()
        self._factor = 1.0  # backpressure: 1 at full speed, down to 0.1

    # ------------------------------------------------------------------ life
    async def run(self, *, handle_signals: bool = False) -> int:
        """Work until stopped; returns the signal number that stopped it (0: none)."""
        self._loop = loop = asyncio.get_running_loop()
        self._signal = 0
        handled = [s for s in (signal.SIGINT, signal.SIGTERM)  # an ignored one stays ignored
                   if handle_signals and signal.getsignal(s) is not signal.SIG_IGN]
        for sig in handled:
            loop.add_signal_handler(sig, self._on_signal, sig)
        _capture.install()
        threads = [threading.Thread(target=t, name=f"corral-worker-{t.__name__}", daemon=True)
                   for t in (self._claim_loop, self._keep_loop, self._report_loop)]
        self._register("running")
        for t in threads:
            t.start()
        try:
            await loop.run_in_executor(None, self._stopped.wait)
            await self._wind_down()
        finally:
            with self._lock:
                self._stopping = True
                self._lock.notify_all()
            for t in threads:
                await asyncio.to_thread(t.join)
            for executor in self._executors.values():
                with contextlib.suppress(Exception):
                    await executor.shutdown()
            _capture.uninstall()
            with contextlib.suppress(BrokenBroker):
                self.broker.deregister(self.id)
            for sig in handled:
                loop.remove_signal_handler(sig)
        return self._signal

    def stop(self) -> None:
        """Claim nothing more; what runs may finish within ``grace``, the rest goes back."""
        self._stopped.set()

    def _on_signal(self, sig: int) -> None:
        if self._signal:  # the second: hand everything back now
            print(f"corral worker {self.id}: handing back what it holds", file=sys.stderr)
            self._grace_over = True
            return
        self._signal = sig
        print(f"corral worker {self.id}: stopping (finishing what runs for up to "
              f"{self.options.grace:g}s; again to hand it back now)", file=sys.stderr)
        self.stop()

    _grace_over = False

    def _orphaned(self) -> None:
        """Our pool died (SIGKILL, the OOM killer) and its death signal did not reach us:
        stop as on SIGTERM, so that no worker outlives its pool."""
        print(f"corral worker {self.id}: its pool (pid {self.options.supervisor}) is gone: "
              f"stopping (finishing what runs for up to {self.options.grace:g}s)",
              file=sys.stderr)
        self.stop()

    async def _wind_down(self) -> None:
        self._register("stopping")
        with self._lock:
            back = [c for c, _ in self._waiting]
            self._waiting.clear()
            self._held -= len(back)
            self._back.extend(back)
            self._lock.notify_all()
        deadline = time.monotonic() + self.options.grace
        while self._running and time.monotonic() < deadline and not self._grace_over:
            await asyncio.sleep(0.05)
        with self._lock:
            left = list(self._running.values())
        for r in left:
            self._drop(r)
            self._back.append(r.claimed)
        # One last report: outcomes, and what goes back.
        with self._lock:
            self._lock.notify_all()
        await asyncio.to_thread(self._report_once)

    # ------------------------------------------------------------------ taking work
    def _free(self) -> int:
        return self.options.concurrency - self._held

    def _claim_loop(self) -> None:
        """Take new entries, and every beat entries whose workers went silent (the one thread
        that takes work, so free slots are counted once)."""
        backoff = _Backoff()
        next_reclaim = 0.0
        while not self._stopped.is_set():
            pressure = self._factor  # under backpressure: smaller batches, further apart
            with self._lock:
                free = self._free()
                if free <= 0:
                    self._lock.wait(0.5)
                    continue
                free = max(1, int(free * pressure))
                self._held += free  # reserved while we wait for entries
            claimed: list[Claimed] = []
            try:
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + self.beat_every
                    claimed = self.broker.reclaim(self.id, self.options.queues, free)
                if not claimed:
                    claimed = self.broker.claim(self.id, self.options.queues, free,
                                                block_s=1.0)
            except BrokenBroker as exc:
                with self._lock:
                    self._held -= free
                backoff.wait(exc, self._stopped)
                continue
            backoff.reset()
            with self._lock:
                self._held -= free - len(claimed)
            if pressure < 1.0:
                self._stopped.wait(self.options.tick * (1.0 / pressure - 1.0))
            if not claimed:
                continue
            try:
                self._admit(claimed)
            except BrokenBroker as exc:
                # Not started, not acknowledged: they are reclaimed after the heartbeat
                # timeout (by us or another worker).
                with self._lock:
                    self._held -= len(claimed)
                backoff.wait(exc, self._stopped)

    def _keep_loop(self) -> None:
        backoff = _Backoff()
        while not self._stopped.wait(self.beat_every):
            if orphaned(self.options.supervisor):
                self._orphaned()
                return
            try:
                with self._lock:
                    held = [r.claimed for r in self._running.values()]
                    held += [c for c, _ in self._waiting]
                lost = self.broker.renew(self.id, held)
                if lost and self._loop is not None:
                    ids = {c.entry for c in lost}
                    self._loop.call_soon_threadsafe(self._lose, ids)
                self._register("running")
                self._read_pressure()
                backoff.reset()
            except BrokenBroker as exc:
                backoff.wait(exc, self._stopped)

    def _read_pressure(self) -> None:
        """Read the broker's saturation; say so when it starts or stops slowing us down."""
        saturation = self._saturation()
        was, self._factor = self._factor, factor(self._pressure, saturation, self._factor)
        if was == 1.0 and self._factor < 1.0:
            print(f"corral worker {self.id}: the broker is {saturation:.0%} full: claiming "
                  f"{self._factor:.0%} of what it could, less often", file=sys.stderr)
        elif was < 1.0 and self._factor == 1.0:
            print(f"corral worker {self.id}: the broker is {saturation:.0%} full: claiming "
                  "at full speed again", file=sys.stderr)

    def _admit(self, claimed: list[Claimed]) -> None:
        """Claimed entries (reserved in ``_held``): skip what is done or cancelled, dead-letter
        what was handed out too often, start the rest on the loop."""
        states = self.broker.states([c.message.id for c in claimed])
        skip = [c for c, s in zip(claimed, states, strict=True) if s is not None]
        if skip:
            self.broker.skip(skip)
        keep = []
        for c, state in zip(claimed, states, strict=True):
            if state is not None:
                continue
            if c.deliveries > self.options.max_deliveries:
                self._dead_letter(c, f"handed out {c.deliveries} times; each worker holding "
                                     f"it went silent for {self.broker.heartbeat_timeout:g}s "
                                     "(died, or was killed)")
                skip.append(c)
            else:
                keep.append(c)
        with self._lock:
            self._held -= len(skip)
            self._lock.notify_all()
        loop = self._loop
        assert loop is not None
        if keep:
            loop.call_soon_threadsafe(self._start_all, keep)  # one wake-up for the batch

    def _dead_letter(self, c: Claimed, reason: str) -> None:
        error = WorkerCrashed(f"task {c.message.task_id!r}: {reason}; it is in the "
                              "dead-letter queue (corral dlq)")
        end = Event(END, c.message.id, self.id,
                    dump_outcome(ERROR, error, limit=self.options.max_value_bytes))
        self.broker.dead_letter(c, reason, [reason], end)

    # ------------------------------------------------------------------ running (loop)
    def _start_all(self, claimed: list[Claimed]) -> None:
        for c in claimed:
            self._start(c)

    def _start(self, c: Claimed) -> None:
        if self._stopped.is_set():
            with self._lock:
                self._held -= 1
                self._back.append(c)
            return
        try:
            body = c.message.load_body(self._functions)
        except BaseException as exc:  # the task's module does not import here: its failure
            error = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
            self._end_now(c, error)
            return
        wanted = {k: v for k, v in (c.message.resources or {}).items() if v}
        if any(self.offer.get(k, 0.0) < v for k, v in wanted.items()):
            if c.deliveries >= self.options.max_deliveries:
                with self._lock:
                    self._held -= 1
                self._dead_letter(c, f"no worker of queue {c.queue!r} offers the resources "
                                     f"it asks for ({wanted})")
            else:  # another worker may offer them
                with self._lock:
                    self._held -= 1
                    self._back.append(c)
            return
        self._waiting.append((c, body))
        self._start_waiting()

    def _start_waiting(self) -> None:
        while self._waiting:
            c, body = self._waiting[0]
            wanted = {k: v for k, v in (c.message.resources or {}).items() if v}
            if any(self._in_use.get(k, 0.0) + v > self.offer.get(k, 0.0)
                   for k, v in wanted.items()):
                return  # first in, first out: it waits for what runs to end
            self._waiting.popleft()
            for k, v in wanted.items():
                self._in_use[k] = self._in_use.get(k, 0.0) + v
            self._launch(c, body, wanted)

    def _launch(self, c: Claimed, body: AttemptBody, wanted: Mapping[str, float]) -> None:
        index = next(self._index)
        log_path = self._logs / f"{index}.log" if body.log_path is not None else None
        args = (index, 1, c.message.task_id, body.fn, body.args, body.kwargs)
        kw: dict[str, Any] = {"env": body.env, "cwd": body.cwd, "log_path": log_path}
        r = _Running(c, body, log_path, wanted)
        work: Work
        if body.heartbeat is not None:
            work = WatchedWork(*args, heartbeat=body.heartbeat, beat=r.beat, **kw)
        else:
            work = Work(*args, **kw)
        r.work = work
        with self._lock:
            self._running[c.message.id] = r
            self._by_index[index] = r
            self._starts.append((c.message.reply,
                                 Event(START, c.message.id, self.id, at=r.started)))
        assert self._loop is not None
        self._loop.create_task(self._submit(r, c.message.executor))

    async def _submit(self, r: _Running, name: str) -> None:
        try:
            executor = self._executors.get(name)
            if executor is None:
                from corral.executors._registry import executor_class

                settings = ExecutorSettings(concurrency=self.options.concurrency)
                executor = executor_class(name).for_run(settings)
                await executor.start(self._on_outcome)
                self._executors[name] = executor
            limits = (None if self._limits is None
                      else self._limits.resolver(r.claimed.message.run_id))
            if limits is not None and name == "thread":  # its threads outlive this context
                r.work.fn = functools.partial(_throttle.call_with, limits, r.work.fn)
            token = _throttle.current.set(limits)  # an async task keeps it
            try:
                executor.submit(r.work)
            finally:
                _throttle.current.reset(token)
        except Exception as exc:
            self._on_outcome(r.work, ERROR, _cannot_run(name, exc))

    def _on_outcome(self, work: Work, status: int, payload: Any) -> None:
        """The local executors' sink (any thread)."""
        if status == STARTED:
            return
        with self._lock:
            r = self._by_index.get(work.index)
            if r is None or self._running.get(r.claimed.message.id) is not r:
                return  # stopped (cancelled, lost, handed back): its fate is not ours
            self._ends.append((r, status, payload))
            self._lock.notify_all()

    def _end_now(self, c: Claimed, error: BaseException) -> None:
        with self._lock:
            self._ends.append((c, ERROR, error))
            self._lock.notify_all()

    def _release(self, r: _Running) -> bool:
        """Forget ``r`` and free its slot and resources; False if it was already."""
        with self._lock:
            if self._running.pop(r.claimed.message.id, None) is None:
                return False
            self._by_index.pop(r.work.index, None)
            self._held -= 1
            for k, v in r.resources.items():
                self._in_use[k] -= v
            self._lock.notify_all()
        if r.log_path is not None:
            with contextlib.suppress(OSError):
                r.log_path.unlink()
        return True

    def _drop(self, r: _Running) -> None:
        """Stop running ``r`` here (cancelled, lost, handed back) and free what it held."""
        if not self._release(r):
            return
        executor = self._executors.get(r.claimed.message.executor)
        if executor is not None:
            with contextlib.suppress(Exception):
                executor.cancel(r.work)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_waiting)

    def _lose(self, entries: set[str]) -> None:
        """Another worker holds these now (we were silent too long): stop them here."""
        for r in [r for r in self._running.values() if r.claimed.entry in entries]:
            self._drop(r)

    def _cancelled(self, attempts: list[str]) -> None:
        with self._lock:
            found = [self._running[a] for a in attempts if a in self._running]
        for r in found:
            self._drop(r)
        if found:
            self.broker.skip([r.claimed for r in found])

    # ------------------------------------------------------------------ reporting
    def _report_loop(self) -> None:
        backoff = _Backoff()
        while not self._stopped.is_set():
            with self._lock:
                if not self._ends:
                    self._lock.wait(self.options.tick)
            try:
                self._report_once()
                backoff.reset()
            except BrokenBroker as exc:
                backoff.wait(exc, self._stopped)

    def _report_once(self) -> None:
        with self._lock:
            starts, self._starts = self._starts, []
            ends, self._ends = self._ends, []
            back, self._back = self._back, []
            running = list(self._running.values())
        posts = starts
        for r in running:
            text = r.read_log()
            reply, attempt = r.claimed.message.reply, r.claimed.message.id
            if text:
                posts.append((reply, Event(OUTPUT, attempt, self.id, text.encode())))
            if r.beaten:
                r.beaten = False
                posts.append((reply, Event(BEAT, attempt, self.id)))
        finished = []
        for item, status, payload in ends:
            claimed = item if isinstance(item, Claimed) else item.claimed
            message = claimed.message
            at = None
            if isinstance(item, _Running):
                at = item.started
                text = item.read_log()
                if text:
                    posts.append((message.reply, Event(OUTPUT, message.id, self.id,
                                                       text.encode())))
                if isinstance(payload, CommandFailed) and item.body.log_path is not None:
                    payload = CommandFailed(payload.exit_code, log_path=item.body.log_path,
                                            tail=payload.tail)
            limit = min(message.max_value_bytes, self.options.max_value_bytes)
            finished.append((claimed, Event(END, message.id, self.id,
                                            dump_outcome(status, payload, limit=limit), at)))
        if starts and finished:  # an END says it started: no START for those
            ending = {c.message.id for c, _ in finished}
            posts = [p for p in posts if p[1].kind != START or p[1].attempt not in ending]
        try:
            self.broker.finish(finished, posts)
        except BrokenBroker:
            with self._lock:  # not reported: again next time
                self._starts[:0] = [p for p in posts if p[1].kind == START]
                self._ends[:0] = ends
                self._back[:0] = back
            raise
        for item, _, _ in ends:
            if isinstance(item, _Running):
                self._retire(item)
            else:
                with self._lock:
                    self._held -= 1
                    self._lock.notify_all()
        failed = sum(status == ERROR for _, status, _ in ends)
        wall = time.time()
        busy = sum(wall - i.started for i, _, _ in ends if isinstance(i, _Running))
        with self._lock:
            self.done += len(ends)
            self.failed += failed
            self.busy_s += busy
            self.recent.add(time.monotonic(), done=len(ends), failed=failed, busy_s=busy)
        now = time.monotonic()
        self.broker.hand_back(self.id, back)
        if running and now >= self._next_cancel_check:
            self._next_cancel_check = now + self.options.tick
            ids = [r.claimed.message.id for r in running]
            states = self.broker.states(ids)
            cancelled = [a for a, s in zip(ids, states, strict=True) if s == "cancelled"]
            if cancelled and self._loop is not None:
                self._loop.call_soon_threadsafe(self._cancelled, cancelled)

    def _retire(self, r: _Running) -> None:
        if self._release(r) and self._loop is not None and self._waiting:
            self._loop.call_soon_threadsafe(self._start_waiting)

    def _register(self, state: str) -> None:
        with self._lock:
            recent = self.recent.figures(time.monotonic())
            info = WorkerInfo(
                id=self.id, host=socket.gethostname(), pid=os.getpid(),
                queues=self.options.queues, concurrency=self.options.concurrency,
                resources=dict(self.options.resources), running=len(self._running),
                done=self.done, started_at=self.started_at, last_beat=time.time(),
                state=state, failed=self.failed, busy_s=self.busy_s,
                weight=self.options.weight, window_s=recent.window_s,
                recent_done=recent.done, recent_failed=recent.failed,
                recent_busy_s=recent.busy_s, pool=self.options.pool)
        with contextlib.suppress(BrokenBroker):
            self.broker.register(info)


def _cannot_run(name: str, exc: BaseException) -> BaseException:
    """An attempt whose executor could not be made or could not take it, on this worker."""
    error = BrokenExecutor(f"this worker cannot run executor {name!r}: "
                           f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


class _Backoff:
    """Waits between attempts to reach a broker that failed, saying so once per outage."""

    def __init__(self) -> None:
        self._delays: Iterator[float] = iter(())
        self._told = False

    def reset(self) -> None:
        self._delays = iter(())
        self._told = False

    def wait(self, exc: BaseException, stop: threading.Event) -> None:
        if not self._told:
            print(f"corral worker: the broker failed, retrying: {exc}", file=sys.stderr)
            self._told = True
            self._delays = itertools.chain(RETRY_S, itertools.repeat(RETRY_S[-1]))
        stop.wait(next(self._delays, RETRY_S[-1]))
