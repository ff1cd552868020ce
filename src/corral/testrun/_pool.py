"""The executors of ``corral test``: a pool of pytest worker processes, or this process.

:class:`WorkerPool` keeps N long-lived workers (:mod:`._worker`), each a pytest session that
has the suite collected (a fork of this process made after it collected, :mod:`._fork`;
else a new interpreter that collects it again), and sends each test to an idle one —
preferably the worker that ran the same module last, whose module- and class-scoped fixtures
are still set up. A
worker that dies running a test (``os._exit``, a segfault) fails that test alone, with its
exit status and the end of its stderr; a test that runs past ``--timeout`` has its worker
killed and is reported as timed out; either way a fresh worker takes the dead one's place.
:class:`InlineRunner` runs the tests in this process, on its main thread (a suite too small
to pay for starting workers), without those protections.

Threads: ``submit``/``cancel``/``shutdown`` come from the run loop, each worker has a reader
thread, and pytest is only ever called on the main thread, through the :class:`Bridge`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import IO, Any

import orjson
import pytest

from corral.executors._base import Executor, Sink, Work
from corral.testrun._bridge import Bridge
from corral.testrun._fork import Forked, fork_worker
from corral.testrun._items import ItemRunner

__all__ = ["InlineRunner", "WorkerPool", "passes_in_order"]

# A worker running a test expected to take at most this long is sent its next test at once,
# so that it need not wait for the round trip to this process between two short tests.
PREFETCH_MAX_S = 0.1
# How much of a dead worker's stderr a crash report shows.
STDERR_TAIL = 2000
# Workers that die before they are ready, in a row, before the pool gives up (the suite
# cannot be collected in a worker: it fails every test left instead of starting workers
# forever).
MAX_FAILED_STARTS = 2

class _Worker:
    __slots__ = ("dead", "ever_ready", "inbox", "last_module", "proc", "reader", "reserved",
                 "running", "sent", "started", "stderr")

    def __init__(self, proc: subprocess.Popen[bytes] | Forked, inbox: IO[bytes],
                 stderr: IO[bytes]) -> None:
        self.proc = proc
        self.inbox = inbox
        self.stderr = stderr
        # The tests sent, in order: the first runs once the worker says it started it
        # (``running``); a second waits in the pipe (sent ahead, see PREFETCH_MAX_S).
        self.sent: deque[Work] = deque()
        self.running = False
        self.started = 0.0  # when the first of them started (time.monotonic)
        self.reserved: str | None = None  # kept for this test: the next of a fixture group
        self.ever_ready = False
        self.dead = False  # killed: its reader has yet to see it go
        self.last_module = ""
        self.reader: threading.Thread | None = None

def _module(nodeid: str) -> str:
    return nodeid.partition("::")[0]

class WorkerPool(Executor):
    """N pytest worker processes run by ``args`` (the ``corral test`` pytest arguments)."""

    name = "pytest"
    reports_start = True

    def __init__(self, bridge: Bridge, args: Sequence[str], workers: int,
                 estimates: Mapping[str, float] | None = None,
                 successors: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.bridge = bridge
        self.estimates = estimates or {}
        # Within a group of tests that share a fixture (see _suite.shared_fixture_groups):
        # the test that comes after each. The worker that ran one keeps itself for the next.
        self.successors = successors or {}
        self.args = list(args)
        self.workers = workers
        self.stopping = False  # set before the run is cancelled: a kill then is no failure
        self._lock = threading.Lock()
        self._live: list[_Worker] = []
        self._pending: deque[Work] = deque()
        self._failed_starts = 0
        self._broken: str | None = None
        self._readers: list[threading.Thread] = []

    @property
    def slots(self) -> int:
        return 2 * self.workers  # one running and one sent ahead, at most, on each

    def fork(self, session: pytest.Session, unplug: Sequence[object]) -> None:
        """Start the workers as forks of this process (:mod:`._fork`), which has collected
        ``session``: on the main thread, before any other thread starts."""
        ours: list[int] = []  # our ends of the pipes forked so far: each child closes them
        forked = []
        for _ in range(self.workers):
            stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed when the worker is gone
            proc, to_worker_w, from_worker_r = fork_worker(session, stderr, unplug, ours)
            ours += [to_worker_w, from_worker_r, stderr.fileno()]
            forked.append((proc, to_worker_w, from_worker_r, stderr))
        with self._lock:
            for proc, to_worker_w, from_worker_r, stderr in forked:
                self._adopt(proc, to_worker_w, from_worker_r, stderr)

    async def start(self, sink: Sink) -> None:
        await super().start(sink)
        with self._lock:
            for _ in range(self.workers - len(self._live)):  # none if forked already
                self._spawn()

    # ------------------------------------------------------------ run loop
    def submit(self, work: Work) -> None:
        with self._lock:
            if self._broken is not None:
                self.bridge.post(self._fail, work, self._broken)
                return
            worker = None if self.stopping else self._idle_for(work.task_id)
            if worker is None:
                self._pending.append(work)
            else:
                self._send(worker, work)

    def cancel(self, work: Work) -> None:
        with self._lock:
            if work in self._pending:
                self._pending.remove(work)
                return
            worker = next((w for w in self._live if work in w.sent), None)
            if worker is None:
                return
            # Running: it timed out, or the run stops. Sent ahead (the run stops): it is in
            # the worker's pipe, so the worker goes too, or it would run it.
            running = worker.running and worker.sent[0] is work
            worker.sent.remove(work)
            worker.dead = True
            elapsed = time.monotonic() - worker.started
            _kill(worker.proc)
            self._requeue(worker)
        if running and not self.stopping:  # the run loop wrote it off: it ran past its timeout
            self.bridge.post(self._fail, work, f"Timeout: the test ran for more than "
                             f"{work.timeout:g} s; corral test stopped its worker", elapsed)

    async def shutdown(self) -> None:
        self.stopping = True
        with self._lock:
            workers = list(self._live)
            self._pending.clear()  # never started: an interrupted run
        for worker in workers:
            if not worker.ever_ready:  # a replacement still starting: nothing to tear down
                _kill(worker.proc)
            with contextlib.suppress(OSError):
                worker.inbox.close()  # end of input: the worker tears down and exits
        await asyncio.to_thread(self._wait, workers)

    def kill_all_now(self) -> None:
        for worker in list(self._live):
            _kill(worker.proc)

    # ------------------------------------------------------------ workers
    def _spawn(self) -> None:
        """Start a worker (lock held)."""
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed when the worker is gone
        proc, to_worker_w, from_worker_r = _start_worker(self.args, stderr)
        self._adopt(proc, to_worker_w, from_worker_r, stderr)

    def _adopt(self, proc: subprocess.Popen[bytes] | Forked, to_worker_w: int,
               from_worker_r: int, stderr: IO[bytes]) -> None:
        """Take a started worker into the pool and read what it says (lock held)."""
        worker = _Worker(proc, os.fdopen(to_worker_w, "wb", buffering=0), stderr)
        reader = threading.Thread(target=self._read, args=(worker, from_worker_r),
                                  name=f"corral-test-reader-{proc.pid}", daemon=True)
        worker.reader = reader
        self._live.append(worker)
        self._readers.append(reader)
        reader.start()

    def _idle_for(self, nodeid: str) -> _Worker | None:
        """A worker for ``nodeid`` (lock held): an idle one, preferably the one that ran its
        module last (its module's fixtures are still set up); else one running a short test
        (:data:`PREFETCH_MAX_S`) with nothing sent ahead; else none (it waits)."""
        module = _module(nodeid)
        best = ahead = None
        for worker in self._live:
            if not worker.ever_ready or worker.dead:
                continue
            if worker.reserved is not None:
                if worker.reserved == nodeid:
                    return worker
                continue
            if not worker.sent:
                if worker.last_module == module:
                    return worker
                best = best or worker
            elif ahead is None and len(worker.sent) == 1 and self._may_follow(worker.sent[0]):
                ahead = worker
        return best or ahead

    def _may_follow(self, work: Work) -> bool:
        """Whether another test may be sent ahead behind ``work``: it is short, and no test
        of its fixture group waits to come next on its worker."""
        nodeid = work.task_id
        return (nodeid not in self.successors
                and self.estimates.get(nodeid, 0.0) <= PREFETCH_MAX_S)

    def _send(self, worker: _Worker, work: Work) -> None:
        worker.reserved = None
        worker.sent.append(work)
        worker.last_module = _module(work.task_id)
        try:
            worker.inbox.write(work.task_id.encode() + b"\n")
        except OSError:
            pass  # the worker is dying: its reader hands this test to another

    def _next(self) -> None:
        """Give what waits to the workers that can take it (lock held)."""
        while self._pending and not self.stopping:
            worker = self._idle_for(self._pending[0].task_id)
            if worker is None:
                return
            self._send(worker, self._pending.popleft())

    def _requeue(self, worker: _Worker) -> None:
        """``worker`` is gone: the tests sent to it that it never started go to others, first
        (lock held)."""
        never_started = list(worker.sent)
        worker.sent.clear()
        worker.running = False
        self._pending.extendleft(reversed(never_started))
        self._next()

    def _read(self, worker: _Worker, fd: int) -> None:
        with os.fdopen(fd, "rb") as messages:
            for line in messages:
                self._handle(worker, orjson.loads(line))
        worker.proc.wait()
        with self._lock:
            work = worker.sent.popleft() if worker.running and worker.sent else None
            self._live.remove(worker)
            self._requeue(worker)
            if not worker.ever_ready:
                self._failed_starts += 1
            why = None
            if work is not None or self._failed_starts >= MAX_FAILED_STARTS:
                why = self._death(worker, work)
            if self._failed_starts >= MAX_FAILED_STARTS and self._broken is None:
                self._broken = why
                lost = list(self._pending)
                self._pending.clear()
                for waiting in lost:
                    self.bridge.post(self._fail, waiting, why)
            elif not self.stopping:
                self._spawn()
        worker.stderr.close()
        if work is not None:
            assert why is not None
            self.bridge.post(self._fail, work, why, time.monotonic() - worker.started)

    def _handle(self, worker: _Worker, message: dict[str, Any]) -> None:
        bridge = self.bridge
        if "report" in message:
            bridge.post(bridge.logreport, message["report"])
        elif "warning" in message:
            bridge.post(bridge.warning, message["warning"])
        elif "start" in message:
            with self._lock:
                work = worker.sent[0] if worker.sent else None
                worker.running = work is not None
                worker.started = time.monotonic()
            if work is not None:
                bridge.post(bridge.logstart, work.task_id)
                self.started(work)
        elif "done" in message or "missing" in message:
            with self._lock:
                work = worker.sent.popleft() if worker.sent else None
                worker.running = False
                if work is not None and not worker.sent:
                    worker.reserved = self.successors.get(work.task_id)
                self._next()
            if work is None:
                return  # written off already (timeout, stop)
            if "missing" in message:
                bridge.post(self._fail, work, "corral test: this test was not collected in "
                            "its worker (the suite collects differently in another process)")
            else:
                bridge.post(bridge.finish, work, self.sink)
        elif "ready" in message:
            with self._lock:
                worker.ever_ready = True
                self._failed_starts = 0
                self._next()

    def _death(self, worker: _Worker, work: Work | None) -> str:
        code = worker.proc.returncode
        how = f"exited with status {code}"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                how = f"was killed by {signal.Signals(-code).name}"
        worker.stderr.seek(0)
        tail = worker.stderr.read()[-STDERR_TAIL:].decode(errors="replace")
        what = "running this test" if work is not None else "before it was ready"
        return (f"corral test: the worker (pid {worker.proc.pid}) {how} {what}"
                + (f"; the end of its stderr:\n{tail}" if tail.strip() else ""))

    def _fail(self, work: Work, why: str, duration: float = 0.0) -> None:
        """Main thread: report ``work`` failed for ``why`` and end it as failed."""
        self.bridge.fail(work, why, duration)
        self.bridge.finish(work, self.sink)

    def _wait(self, workers: list[_Worker]) -> None:
        for worker in workers:
            try:
                worker.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a teardown that hangs: no one waits for it
                _kill(worker.proc)
        for reader in list(self._readers):
            reader.join()

def _start_worker(args: Sequence[str], stderr: IO[bytes] | int
                  ) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start a worker process on ``args``: it, and the ends of its pipes that are ours (to
    write node ids to, to read messages from)."""
    to_worker_r, to_worker_w = os.pipe()
    from_worker_r, from_worker_w = os.pipe()
    # Workers import as this process does: with the working directory on sys.path when it
    # is on ours (`python -m corral.cli test`, like `python -m pytest`), else without
    # (`corral test`, like `pytest`), which `python -m` alone would put there.
    on_path = "" in sys.path or os.getcwd() in sys.path
    cmd = [sys.executable, *([] if on_path else ["-P"]), "-m", "corral.testrun._worker",
           str(to_worker_r), str(from_worker_w), *args]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr, pass_fds=(to_worker_r, from_worker_w),
                                start_new_session=True)
    finally:
        os.close(to_worker_r)
        os.close(from_worker_w)
    return proc, to_worker_w, from_worker_r


def passes_in_order(args: Sequence[str], tests: Sequence[str], timeout: float | None = None
                    ) -> bool:
    """Whether the last of ``tests`` passes (or skips) when ``tests`` run in that order in a
    fresh worker (``--check-order``). Nothing of it reaches this process's pytest session."""
    nodeid = tests[-1]
    proc, to_worker_w, from_worker_r = _start_worker(args, subprocess.DEVNULL)
    timer = threading.Timer(timeout, _kill, (proc,)) if timeout else None
    passed = False
    with os.fdopen(to_worker_w, "wb", buffering=0) as inbox, \
            os.fdopen(from_worker_r, "rb") as messages:
        try:
            inbox.write(b"".join(t.encode() + b"\n" for t in tests))
            inbox.close()  # these tests, then the worker ends
        except OSError:
            pass
        if timer is not None:
            timer.start()
        failed = False
        for line in messages:
            message = orjson.loads(line)
            report = message.get("report")
            if report is not None and report.get("nodeid") == nodeid:
                failed = failed or report.get("outcome") == "failed"
            elif message.get("done") == nodeid:
                passed = not failed
    if timer is not None:
        timer.cancel()
    proc.wait()
    return passed


def _kill(proc: subprocess.Popen[bytes] | Forked) -> None:
    """Kill a worker and whatever its test started (its own session; the worker alone if
    it has yet to make one: a fork that has not run yet)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGKILL)
    except PermissionError:
        pass

class InlineRunner(Executor):
    """Runs the tests in this process, one at a time, on the main thread."""

    name = "pytest"

    def __init__(self, bridge: Bridge) -> None:
        super().__init__()
        self.bridge = bridge
        self.runner = ItemRunner()
        self.stopping = False

    @property
    def slots(self) -> int:
        return 1

    def submit(self, work: Work) -> None:
        self.bridge.post(self._run, work)

    def _run(self, work: Work) -> None:
        if self.stopping:
            return
        self.runner.run(self.bridge.items[work.task_id])
        self.bridge.finish(work, self.sink)

    async def shutdown(self) -> None:
        self.stopping = True
        self.bridge.post(self.runner.finish)
