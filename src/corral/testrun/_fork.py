"""Workers forked from the ``corral test`` process after it collected the suite.

A worker started as a new interpreter (:func:`~._pool._start_worker`) imports pytest and the
suite and collects it again before it can run a test: on a small suite that is most of what
the parallel run saves (pytest-xdist's controller never collects; ours must, to schedule). A
fork of this process, made once collection is over and before any thread starts, has the
session already: it is ready in milliseconds, and it speaks the same protocol
(:mod:`._worker`) over the same two pipes. Replacements of a worker that died are started
as new interpreters (threads run by then, and fork with threads is unsafe).

In the child: its own session (process group) so that a kill takes what it started; stdout
to /dev/null and stderr (and the fault handler) to the file the pool reads a crash's end
from; the ``corral test`` process's reporting (terminal, ``--junit-xml``, this plugin)
unplugged; then the worker loop, pytest's session end, and ``os._exit`` (nothing of the
parent's, such as its store's connections, is closed or flushed by the child)::

    corral test: collect ──fork──> child: unplug reporting ──> WorkerPlugin loop ──> _exit
                 └─ run loop, readers (threads start only after every fork)
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterable
from typing import IO, Any

import pytest

from corral.testrun._worker import WorkerPlugin, die_with, quiet_worker

__all__ = ["Forked", "can_fork", "fork_worker"]

# How often a wait for a forked worker's exit looks again.
WAIT_POLL_S = 0.005


def can_fork() -> bool:
    """Whether workers may be forks of this process: POSIX fork (not macOS, where system
    libraries are not fork-safe), and no thread but this one (a fork copies one thread;
    a lock another held stays locked in the child). ``CORRAL_TEST_FORK=0`` turns it off."""
    return (hasattr(os, "fork") and sys.platform != "darwin"
            and os.environ.get("CORRAL_TEST_FORK", "1") != "0"
            and threading.active_count() == 1)


class Forked:
    """A forked worker, as the pool waits for and kills it (``subprocess.Popen``'s
    ``pid``, ``returncode`` and ``wait``). Safe to wait for from two threads."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is None:
                with contextlib.suppress(ChildProcessError):
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                    if pid:
                        self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(WAIT_POLL_S)
        return code


def fork_worker(session: pytest.Session, stderr: IO[bytes], unplug: Iterable[object],
                close: Iterable[int]) -> tuple[Forked, int, int]:
    """Fork a worker of ``session``: it, and the ends of its pipes that are ours (to write
    node ids to, to read messages from). The child unplugs the plugins ``unplug`` and closes
    ``close`` (our ends of the other workers' pipes: it must not hold them open)."""
    to_worker_r, to_worker_w = os.pipe()
    from_worker_r, from_worker_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()  # or the child would hold, and might write, a copy of it
    parent = os.getpid()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded": checked
        pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.setsid()
            for fd in (to_worker_w, from_worker_r, *close):
                with contextlib.suppress(OSError):
                    os.close(fd)
            _redirect(session, stderr.fileno())
            die_with(parent)
            code = _serve(session, list(unplug), os.fdopen(to_worker_r, "rb"),
                          os.fdopen(from_worker_w, "wb"))
        except BaseException:  # reported on the stderr the pool reads
            with contextlib.suppress(Exception):
                traceback.print_exc()
                sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(to_worker_r)
    os.close(from_worker_w)
    return Forked(pid), to_worker_w, from_worker_r


def _redirect(session: pytest.Session, stderr_fd: int) -> None:
    """stdout to /dev/null, stderr and the fault handler to ``stderr_fd``: also the copies
    pytest's capture restores after each test (its saved originals)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    targets = {1: devnull, 2: stderr_fd}
    capman: Any = session.config.pluginmanager.get_plugin("capturemanager")
    capturing = getattr(capman, "_global_capturing", None)
    for name, fd in (("out", 1), ("err", 2)):
        saved = getattr(getattr(capturing, name, None), "targetfd_save", None)
        if isinstance(saved, int):
            os.dup2(targets[fd], saved)
        os.dup2(targets[fd], fd)
    os.close(devnull)
    faulthandler.enable(file=stderr_fd, all_threads=True)


def _serve(session: pytest.Session, unplug: list[object], inbox: IO[bytes],
           outbox: IO[bytes]) -> int:
    """The worker loop over the session collected already, then pytest's session end."""
    config = session.config
    manager = config.pluginmanager
    for plugin in [*unplug, manager.get_plugin("terminalreporter")]:
        if plugin is not None and manager.is_registered(plugin):
            manager.unregister(plugin)
    quiet_worker(config)
    worker = WorkerPlugin(inbox, outbox)  # type: ignore[arg-type]
    worker.config = config
    manager.register(worker, "corral-test-worker")
    worker.pytest_runtestloop(session)
    config.hook.pytest_sessionfinish(session=session, exitstatus=pytest.ExitCode.OK)
    outbox.flush()
    return 0
