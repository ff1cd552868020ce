"""Process executor: CPU-bound Python functions on a pool of worker processes.

Why not ``concurrent.futures.ProcessPoolExecutor``: when one of its workers dies, the whole pool
breaks and every task in flight fails with it, and it cannot stop a task that runs past its
timeout. Here each worker runs one attempt at a time, so:

- a worker that crashes (segfault, ``os._exit``, OOM kill) fails exactly the attempt it was
  running, with :class:`WorkerCrashed`, and is replaced;
- a timeout, a hang (no sign of life for the task's ``heartbeat``) or a cancelled run kills
  that worker's process group, and only that one.

Functions, arguments and results travel with cloudpickle, so closures, lambdas and functions
defined in ``__main__`` work. A task's exception comes back with its original type and the
worker's traceback as ``__cause__``. Each worker is a fresh interpreter
(:mod:`corral.executors._process_worker`) that talks over two pipes; the run loop watches their
read ends, so no thread is needed on this side::

    run loop ──submit──> idle worker? ──send──> worker process ──result──> pipe ──> sink
                 └──> pending queue (all busy) ──> next free worker

No worker outlives corral. A worker runs in its own process group (a kill takes the task's
children too); it asks the kernel to SIGKILL it when corral dies (``PR_SET_PDEATHSIG``, where
there is one) and exits quietly if corral is already gone; and its group is watched by a
:class:`~corral.executors._reaper.Reaper`, which ends it (the task's own subprocesses included)
when corral dies without doing so itself. A worker that exits, and every worker at
:meth:`ProcessExecutor.shutdown`, takes what is left of its group with it.

A worker says :data:`STARTED` as soon as it has an attempt, and the executor reports that
start (``reports_start``): an attempt's ``timeout`` and ``heartbeat`` count from then, so the
start-up of a fresh worker (a new interpreter importing corral) is not the task's time. A task
with a heartbeat may send :data:`BEAT` messages on the same pipe before its result (coalesced
by the worker: see :mod:`._process_worker`); each one calls ``work.beat()``. Unpickling the
task (importing its module) is the task's own time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from corral._errors import WorkerCrashed
from corral.executors._base import CANCELLED, ERROR, OK, SKIP, Executor, RemoteTraceback, Work
from corral.executors._process_worker import BEAT, STARTED
from corral.executors._reaper import Reaper

__all__ = ["ProcessExecutor"]


class _Worker:
    __slots__ = ("cancelled", "current", "proc", "rx", "tx")

    def __init__(self, proc: subprocess.Popen[bytes], tx: Connection, rx: Connection) -> None:
        self.proc = proc
        self.tx = tx
        self.rx = rx
        self.current: Work | None = None
        self.cancelled = False


class ProcessExecutor(Executor):
    """Runs callables in up to ``max_workers`` processes, started when first needed."""

    name = "process"
    writes_logs = True
    reports_start = True  # a fresh worker's start-up is not the attempt's time

    def __init__(self, max_workers: int | None = None, *, kill_grace: float = 3.0) -> None:
        super().__init__()
        # One worker per CPU: more would only make CPU-bound tasks share cores.
        self.max_workers = max_workers or os.cpu_count() or 1
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._pending: collections.deque[Work] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Ends the workers' groups if corral dies without doing so (SIGTERM, then SIGKILL
        # after kill_grace).
        self._reaper = Reaper(grace=kill_grace)

    async def start(self, sink: Any) -> None:
        await super().start(sink)
        self._loop = asyncio.get_running_loop()

    @property
    def slots(self) -> int:
        # One attempt per worker: more admitted would wait in the pending queue, their
        # timeouts already running.
        return self.max_workers

    # ------------------------------------------------------------------ submit / cancel
    def submit(self, work: Work) -> None:
        if not self._idle and len(self._workers) < self.max_workers:
            self._spawn()
        if self._idle:
            self._send(self._idle.pop(), work)
        else:
            self._pending.append(work)

    def cancel(self, work: Work) -> None:
        worker = work.handle
        if worker is None:  # still queued here
            with contextlib.suppress(ValueError):
                self._pending.remove(work)
            return
        if isinstance(worker, _Worker) and worker.current is work:
            worker.cancelled = True
            _killpg(worker.proc.pid)

    async def shutdown(self) -> None:
        self._pending.clear()
        workers = list(self._workers)
        for worker in workers:
            if worker.current is not None:
                _killpg(worker.proc.pid)
            self._retire(worker)  # closing its pipe makes an idle worker exit
        for worker in workers:
            await _reap(worker.proc)
            self._end_group(worker)
        self._reaper.close()

    def kill_all_now(self) -> None:
        """SIGKILL every worker's group at once (the second Ctrl-C)."""
        for worker in self._workers:
            _killpg(worker.proc.pid)

    # ------------------------------------------------------------------ internals
    def _spawn(self) -> None:
        assert self._loop is not None, "ProcessExecutor was not started"
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        # The worker imports what the parent can import: the same sys.path, in the same order
        # (a pipeline's directories last: see corral._imports). -P keeps Python from putting
        # the working directory first, where a user's select.py could shadow the worker's own.
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "corral.executors._process_worker",
                 str(to_child_r), str(from_child_w), str(os.getpid())],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else None,
                env=env,
                start_new_session=True,  # its own process group: a kill takes its children
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._reaper.watch(proc.pid)
        worker = _Worker(proc, Connection(to_child_w, readable=False),
                         Connection(from_child_r, writable=False))
        self._workers.append(worker)
        self._idle.append(worker)
        self._loop.add_reader(from_child_r, self._on_readable, worker)

    def _send(self, worker: _Worker, work: Work) -> None:
        worker.current = work
        worker.cancelled = False
        work.handle = worker
        log = work.log_file
        heartbeat = work.heartbeat if work.beat is not None else None  # no beat: no watching
        try:
            message = cloudpickle.dumps((work.fn, work.args, work.kwargs, log, heartbeat))
        except Exception as exc:
            worker.current = None
            self._idle.append(worker)
            error = TypeError(f"task {work.task_id!r} could not be pickled for a process: {exc}")
            error.__cause__ = exc
            self.sink(work, ERROR, error)
            return
        try:
            worker.tx.send_bytes(message)
        except OSError:
            pass  # the worker died; _on_readable sees the EOF and reports it
        if work.beat is not None:
            work.beat()  # it starts now, whatever it waited for in the pending queue

    def _on_readable(self, worker: _Worker) -> None:
        work = worker.current
        try:
            data = worker.rx.recv_bytes()
        except (EOFError, OSError):
            self._worker_died(worker)
            return
        if data in (BEAT, STARTED):
            if work is not None:
                if data == STARTED:
                    self.started(work)  # its timeout and heartbeat count from now
                if work.beat is not None:
                    work.beat()
            return
        worker.current = None
        if work is None:  # pragma: no cover - protocol violation by the worker
            return
        work.handle = None
        self._idle.append(worker)
        self._feed()
        self._report(work, data)

    def _report(self, work: Work, data: bytes) -> None:
        try:
            status, payload = cloudpickle.loads(data)
        except Exception as exc:
            error = TypeError(f"the result of task {work.task_id!r} could not be unpickled: {exc}")
            self.sink(work, ERROR, error)
            return
        if status == OK:
            self.sink(work, OK, payload)
        elif status == SKIP:
            self.sink(work, SKIP, None)
        else:
            error, text = payload
            error.__cause__ = RemoteTraceback(text)
            self.sink(work, ERROR, error)

    def _worker_died(self, worker: _Worker) -> None:
        self._retire(worker)
        code = worker.proc.wait()
        self._end_group(worker)
        work = worker.current
        worker.current = None
        if work is not None:
            work.handle = None
            if worker.cancelled:
                self.sink(work, CANCELLED, None)
            else:
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                self.sink(work, ERROR, WorkerCrashed(
                    f"the worker process (pid {worker.proc.pid}) running task "
                    f"{work.task_id!r} died ({how})"))
        self._feed()

    def _retire(self, worker: _Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        if self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(worker.rx.fileno())
        with contextlib.suppress(OSError):
            worker.rx.close()
        with contextlib.suppress(OSError):
            worker.tx.close()

    def _end_group(self, worker: _Worker) -> None:
        """The worker has exited: end what is left of its group (subprocesses its tasks
        started), then tell the reaper there is nothing left to watch."""
        _killpg(worker.proc.pid)
        self._reaper.forget(worker.proc.pid)

    def _feed(self) -> None:
        while self._pending:
            if not self._idle and len(self._workers) < self.max_workers:
                self._spawn()
            if not self._idle:
                return
            self._send(self._idle.pop(), self._pending.popleft())


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _reap(proc: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while proc.poll() is None:
        if loop.time() > deadline:
            _killpg(proc.pid)
            proc.wait()
            return
        await asyncio.sleep(0.01)
