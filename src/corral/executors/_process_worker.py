"""The child side of the process executor: ``python -m corral.executors._process_worker R W``.

Reads one framed message at a time from fd ``R`` — ``cloudpickle.dumps((fn, args, kwargs,
log_path, heartbeat))`` —, says :data:`STARTED` on fd ``W``, runs it, and writes ``(status,
payload)`` back on ``W``. The start message is how the parent's timeouts and heartbeats leave
out the worker's own start-up (a fresh interpreter importing corral can take a second on a
busy machine). While a
task runs, its stdout and stderr (file descriptors 1 and 2, so also those of any subprocess it
starts) go to the attempt's log file.

A task with a ``heartbeat`` also sends signs of life, as :data:`BEAT` messages on ``W`` before
its result: its output goes through a pipe that a :class:`_Watcher` thread copies on to the log,
and both that output and :func:`corral.heartbeat` calls mark the attempt alive. The watcher
sends at most one beat per *gap* (a tenth of the heartbeat, at most a second), so a chatty task
costs the parent one message per gap, and a beat arrives at most one gap late::

    task ──fd 1, 2──> pipe ──> watcher thread ──> log file
      └──heartbeat()──> pending ─┘    └──BEAT (at most one per gap)──> W ──> parent

Started as a fresh interpreter (not ``fork``, not ``multiprocessing``'s ``spawn``) so that a
user's ``__main__`` is never re-imported and re-run in the worker; cloudpickle ships functions
defined in ``__main__`` and closures by value.

A worker dies with corral (``python -m corral.executors._process_worker R W PARENT``): on Linux
it asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), then checks that
``PARENT`` is still its parent (it may have died before the request). A worker whose parent is
gone exits quietly, wherever it notices (reading the next task, sending a result): its
traceback would only land on a dead run's stderr.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from corral import _heartbeat
from corral._errors import Skip
from corral._parent_death import ask_death_signal

OK, ERROR, SKIP = 0, 1, 2
BEAT = b"."  # a sign of life of the running attempt; a result is always a longer pickle
STARTED = b"!"  # the worker has the attempt and starts it (its timeout counts from here)
CHUNK = 65536  # bytes of output read at a time
MAX_GAP = 1.0  # seconds: the longest a beat waits to be sent, whatever the heartbeat


class _Watcher(threading.Thread):
    """Reads a watched attempt's output, copies it to ``out_fd`` and sends coalesced beats."""

    def __init__(self, out_fd: int, tx: Connection, heartbeat: float) -> None:
        super().__init__(name="corral-watcher", daemon=True)
        self.out_fd = out_fd
        self.tx = tx
        self.gap = min(heartbeat / 10, MAX_GAP)
        self.read_fd, self.write_fd = os.pipe()
        self.pending = True  # a sign of life not yet sent (the first: the attempt starts)
        self.stopping = threading.Event()

    def beat(self) -> None:
        """A sign of life (what :func:`corral.heartbeat` calls): one store, no I/O."""
        self.pending = True

    def run(self) -> None:
        read_fd: int | None = self.read_fd
        sent = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if self.pending and now - sent >= self.gap:
                self.pending = False
                sent = now
                try:
                    self.tx.send_bytes(BEAT)
                except OSError:  # the parent is gone or shutting down: nobody to tell
                    return
            if read_fd is None:  # output closed early: only heartbeat() calls remain
                self.stopping.wait(self.gap)
            elif select.select([read_fd], [], [], self.gap)[0]:
                data = os.read(read_fd, CHUNK)
                if data:
                    _write_all(self.out_fd, data)
                    self.pending = True
                else:
                    read_fd = None
        if read_fd is not None:  # what the task wrote before it returned
            os.set_blocking(read_fd, False)
            try:
                for _ in range(1024):  # bounded: a child that outlived the task may write on
                    data = os.read(read_fd, CHUNK)
                    if not data:
                        break
                    _write_all(self.out_fd, data)
            except BlockingIOError:
                pass

    def finish(self) -> None:
        """Called once the task's fds 1 and 2 are restored: drain, stop, close."""
        self.stopping.set()
        self.join()
        os.close(self.read_fd)
        os.close(self.out_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _run_one(message: bytes, tx: Connection) -> bytes:
    saved = None
    watcher = None
    token = None
    result: tuple[int, Any]
    try:
        fn, args, kwargs, log_path, heartbeat = cloudpickle.loads(message)
        if log_path is not None or heartbeat is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            saved = (os.dup(1), os.dup(2))
            if log_path is not None:
                out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            else:
                out = os.dup(saved[0])  # where output goes without a log
            target = out
            if heartbeat is not None:
                watcher = _Watcher(out, tx, heartbeat)
                target = watcher.write_fd
                watcher.start()
                token = _heartbeat.current.set(watcher.beat)
            os.dup2(target, 1)
            os.dup2(target, 2)
            os.close(target)
        result = (OK, fn(*args, **kwargs))
    except Skip:
        result = (SKIP, None)
    except BaseException as exc:
        text = traceback.format_exc()
        sys.stderr.write(text)
        result = (ERROR, (exc, text))
    finally:
        if saved is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        if watcher is not None:
            if token is not None:
                _heartbeat.current.reset(token)
            watcher.finish()
    try:
        return bytes(cloudpickle.dumps(result))
    except Exception as exc:
        what = "return value" if result[0] == OK else "exception"
        error = TypeError(f"the task's {what} could not be pickled: {exc}")
        return bytes(cloudpickle.dumps((ERROR, (error, traceback.format_exc()))))


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when ``parent`` dies (Linux); exit now if it already has."""
    ask_death_signal(signal.SIGKILL)  # where it cannot be asked for, the reaper remains
    if os.getppid() != parent:
        _parent_gone()


def _parent_gone() -> None:
    """Corral is gone: nobody wants the result, and no traceback to a dead run's stderr."""
    os._exit(0)


def main(read_fd: int, write_fd: int, parent: int | None = None) -> None:
    if parent is not None:
        die_with_parent(parent)
    rx = Connection(read_fd, writable=False)
    tx = Connection(write_fd, readable=False)
    while True:
        try:
            message = rx.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            tx.send_bytes(STARTED)
        except OSError:
            _parent_gone()
        result = _run_one(message, tx)
        try:
            tx.send_bytes(result)
        except OSError:
            _parent_gone()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
