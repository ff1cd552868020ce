"""The worker side of the Dask executor: what runs on a Dask worker for each attempt.

The executor submits :func:`run_attempt` with the attempt's callable and arguments already
packed by cloudpickle, so that a module the worker cannot import fails that attempt with a
message that says so. Everything the executor hears from a running attempt, besides its result,
travels as Dask events on the run's topic (``worker.log_event``)::

    run_attempt ──START (worker address, pid), acknowledged ───┐
      │ print(), sys.stderr ──> _Watch buffer ──┐               │  worker -> scheduler -> client
      │ corral.heartbeat() ──> pending ─────────┴─> flusher ────┤  (the executor's handler:
      └──> returns the value, or raises the task's exception ───┘   started, log file, beat)

The START is a call to the scheduler that the attempt waits for, so that the executor knows
which worker runs it even if the attempt kills that worker at once; the rest are ordinary
events. A :class:`_Watch` exists only for an attempt with a log or a heartbeat. Its output is
sent in chunks: by the flusher thread (one per worker process) at most once per *gap* (a
tenth of the heartbeat, at most a second), sooner when a chunk is full, and what is left when
the attempt ends; a :func:`corral.heartbeat` call only marks the attempt alive, and the
flusher sends one beat per gap. Events and results take the same ordered streams (worker to
scheduler to client), so every event an attempt sent reaches the executor before its result:
the attempt's log is complete when its outcome is reported.

What is captured is what Python code writes to ``sys.stdout`` and ``sys.stderr`` in the
attempt's own thread (a worker runs several attempts at once, in threads); output written to
file descriptors 1 and 2 directly goes to the worker's own output.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle

from corral import _capture, _heartbeat
from corral._errors import Skip

__all__ = ["BEAT", "OUTPUT", "SKIPPED", "START", "TRACEBACK_ATTR", "Skipped", "run_attempt"]

# What an event of the run's topic says, as its first item: (START, key, worker, pid),
# (OUTPUT, key, text) or (BEAT, key).
START, OUTPUT, BEAT = 0, 1, 2

MAX_GAP = 1.0  # seconds: the longest output or a beat waits before it is sent
CHUNK = 16384  # characters of output sent at once at most (the scheduler keeps recent events)
TICK = 0.05  # seconds between the flusher's looks at the attempts it watches
ANNOUNCE_TIMEOUT = 30.0  # seconds an attempt waits for the scheduler to have its START

TRACEBACK_ATTR = "_corral_remote_traceback"
"""Where a task's exception carries the worker's traceback, as text, to the executor."""


class Skipped:
    """What :func:`run_attempt` returns for an attempt that raised :class:`corral.Skip`: to
    Dask the task succeeded (it did what was asked), to corral it was skipped."""

    __slots__ = ()


SKIPPED = Skipped()


def run_attempt(payload: bytes, topic: str, key: str, log: bool, heartbeat: float | None) -> Any:
    """Run one attempt on this worker: ``payload`` is ``cloudpickle.dumps((fn, args,
    kwargs))``; events go to ``topic`` under ``key``. ``log``: send its output; ``heartbeat``:
    send signs of life (seconds, or None)."""
    from distributed import get_worker

    worker = get_worker()
    address = worker.address

    def send(message: tuple[Any, ...]) -> None:
        worker.log_event(topic, message)

    _announce(worker, topic, (START, key, address, os.getpid()))
    watch = token = beat_token = None
    if log or heartbeat is not None:
        watch = _Watch(send, key, log=log, heartbeat=heartbeat)
        _install_capture()
        token = _capture.current.set(watch)
        if heartbeat is not None:
            beat_token = _heartbeat.current.set(watch.mark)
        _FLUSHER.add(watch)
    try:
        try:
            fn, args, kwargs = cloudpickle.loads(payload)
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                f"the Dask worker {address} cannot import module {exc.name!r}, which this task "
                "needs: install it on the workers, or put it on their PYTHONPATH",
                name=exc.name) from None
        value = fn(*args, **kwargs)
        if inspect.iscoroutine(value):  # an async def task: run it to its end, here
            value = asyncio.run(value)
        return value
    except Skip:
        return SKIPPED
    except BaseException as exc:
        text = traceback.format_exc()
        if log:
            sys.stderr.write(text)  # into the attempt's log, as the process executor does
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, TRACEBACK_ATTR, text)
        raise
    finally:
        if watch is not None:
            _FLUSHER.discard(watch)
            if beat_token is not None:
                _heartbeat.current.reset(beat_token)
            _capture.current.reset(token)  # type: ignore[arg-type]
            watch.close()


def _announce(worker: Any, topic: str, message: tuple[Any, ...]) -> None:
    """Send ``message`` to the scheduler and wait until it has it: the START of an attempt
    must be known before the attempt can take its worker down with it (an event sent the
    usual way waits a few milliseconds in the worker's outgoing batch, and dies with it)."""
    from distributed.utils import sync

    try:
        sync(worker.loop, worker.scheduler.log_event, topic=topic, msg=message,
             callback_timeout=ANNOUNCE_TIMEOUT)
    except Exception:  # the scheduler is slow or gone: send it the usual way, and run
        worker.log_event(topic, message)


class _Watch(_capture.TaskOutput):
    """The output and signs of life of one attempt, sent as events (thread-safe)."""

    __slots__ = ("_buffer", "_gap", "_lock", "_pending", "_sent", "_size", "key", "send")

    def __init__(self, send: Callable[[tuple[Any, ...]], None], key: str, *, log: bool,
                 heartbeat: float | None) -> None:
        # A path (any) routes the attempt's writes here; a beat makes each write a sign of life.
        super().__init__(Path(key) if log else None,
                         self.mark if heartbeat is not None else None)
        self.send = send
        self.key = key
        self._gap = MAX_GAP if heartbeat is None else min(heartbeat / 10, MAX_GAP)
        self._lock = threading.Lock()
        self._buffer: list[str] = []
        self._size = 0
        self._pending = False  # a sign of life not sent yet
        self._sent = 0.0

    def mark(self) -> None:
        """A sign of life (what :func:`corral.heartbeat` calls): one store, no I/O."""
        self._pending = True

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer.append(text)
            self._size += len(text)
            if self._size >= CHUNK:
                self._send_locked(time.monotonic())
        return len(text)

    def flush(self) -> None:
        """Nothing to do: the flusher sends within a gap."""

    def tick(self, now: float) -> None:
        """The flusher's look: send what waits, if a gap has passed since the last send."""
        if (self._buffer or self._pending) and now - self._sent >= self._gap:
            with self._lock:
                self._send_locked(now)

    def close(self) -> None:
        """The attempt ended: send the output left (its end is sign of life enough)."""
        with self._lock:
            if self._buffer:
                self._send_locked(time.monotonic())

    def _send_locked(self, now: float) -> None:
        self._pending = False
        self._sent = now
        if not self._buffer:
            self.send((BEAT, self.key))
            return
        text = "".join(self._buffer)
        self._buffer.clear()
        self._size = 0
        # Events travel as msgpack, which takes only valid UTF-8.
        text = text.encode("utf-8", "replace").decode("utf-8")
        for start in range(0, len(text), CHUNK):
            self.send((OUTPUT, self.key, text[start:start + CHUNK]))


class _Flusher:
    """One daemon thread per worker process that sends the watched attempts' output and beats;
    it sleeps on a condition while nothing is watched."""

    def __init__(self) -> None:
        self._watches: set[_Watch] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, watch: _Watch) -> None:
        with self._cond:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="corral-flusher",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def discard(self, watch: _Watch) -> None:
        with self._cond:
            self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._watches:
                    self._cond.wait()
                watches = list(self._watches)
            now = time.monotonic()
            for watch in watches:
                watch.tick(now)
            time.sleep(TICK)


_FLUSHER = _Flusher()
_capture_lock = threading.Lock()
_captured = False


def _install_capture() -> None:
    """Route this worker process's ``sys.stdout``/``sys.stderr`` by attempt, once and for
    good: a write outside a watched attempt goes on to the real stream."""
    global _captured
    with _capture_lock:
        if not _captured:
            _capture.install()
            _captured = True
