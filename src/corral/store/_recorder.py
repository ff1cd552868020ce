"""StoreRecorder: a run listener that makes a run durable without slowing it down.

::

    run loop ──transitions(batch)──> SimpleQueue ──> writer thread ──one transaction per──> Store
    (enqueue only: a list append                      flush: one batch row (packed transitions
     and a reference to each value/error)             and values), events, lease renewal

Policy:

- **Group commit.** The loop only enqueues. The writer takes whatever has queued, waits at
  most ``flush_interval`` since its last commit for more (or until ``max_batch`` batches),
  and writes it all in one transaction: under load one commit carries hundreds of
  transitions; when idle a transition is durable within a few milliseconds.
- **Serialise off the loop.** Values are pickled and tracebacks formatted on the writer
  thread. (So a task that mutates its upstream's value in place may race the pickling:
  don't.)
- **Begin and end are synchronous.** ``run_started`` writes the run (and, resuming, takes the
  old run over) before any task starts, so a locked run or a broken store stops the run
  before it does anything. ``run_finished`` waits for the writer to flush everything and
  record the end: when ``Runner.run`` returns, the history is on disk.
- **Checkpoints** of SQLite's write-ahead log happen on the writer, between commits, at most
  every :data:`CHECKPOINT_INTERVAL` seconds: never inside the commit that ends the run.
- **Lease.** The writer renews the run's lease every ``renew_every`` seconds (to ``lease``
  seconds ahead), even while idle. A process that dies stops renewing and the lease
  lapses. The run also records this process's identity (:mod:`corral.store._owner`): on this
  machine a resume does not wait for the lease of a process that is gone.
- **After a write fails** (full disk, locked database) the writer writes nothing more, so the
  stored history stays a consistent prefix of the run; ``run_finished`` then raises the
  :class:`~corral._errors.BrokenStore` (the run's result is kept in :attr:`result`).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import queue
import socket
import threading
import time
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral._errors import BrokenStore, CorralError
from corral._events import RunInfo, Transition
from corral._result import RunResult
from corral._spec import ENDS_ATTEMPT, TaskState
from corral.store._interface import Store
from corral.store._owner import current_process
from corral.store._records import (
    EventRecord,
    RunRecord,
    StoredStatus,
    json_hash,
    packed_entry,
    snapshot_json,
)
from corral.store._snapshot import snapshot_of

if TYPE_CHECKING:
    from corral._graph import Graph
    from corral._runner import Runner

__all__ = ["StoreRecorder", "snapshot_of"]

SUCCEEDED = TaskState.SUCCEEDED
RUNNING = TaskState.RUNNING
# States that end an attempt: their transition carries the attempt's duration.
_ENDS_ATTEMPT = ENDS_ATTEMPT

# How often (s) the writer folds SQLite's write-ahead log into the database, between commits.
CHECKPOINT_INTERVAL = 1.0

_FINISH = object()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return str(os.getuid())


class StoreRecorder:
    """Records a run in ``store``. For callers: construct and pass in
    ``Runner(listeners=[...])``; everything it stores comes with the run's transitions.
    ``resume_of`` names the run this one resumes; ``source_path`` the pipeline file, stored so
    the run can be rebuilt.

    The three listener methods are for the runner only.
    """

    def __init__(
        self,
        store: Store,
        runner: Runner | None = None,
        *,
        source_path: str | Path | None = None,
        resume_of: str | None = None,
        flush_interval: float | timedelta = 0.005,
        max_batch: int = 1000,
        renew_every: float | timedelta = 5.0,
        lease: float | timedelta = 30.0,
    ) -> None:
        self.store = store
        self.runner = runner
        self.source_path = str(source_path) if source_path is not None else None
        self.resume_of = resume_of
        self.flush_interval = _secs(flush_interval)
        self.max_batch = max_batch
        self.renew_every = _secs(renew_every)
        # A lease must outlive a few missed renewals, or a busy writer looks dead.
        self.lease = max(_secs(lease), 2 * self.renew_every)
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.run_id: str | None = None
        self.flushes = 0  # commits made: for tests and measurements
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._finishing = threading.Event()
        self._thread: threading.Thread | None = None
        self._info: RunInfo | None = None
        self._host = socket.gethostname()
        self._owner = f"{_user()}@{self._host}:{os.getpid()}"
        self._running_since: dict[str, float] = {}
        self._log_prefix = ""  # the run's log folder as its transitions name their logs

    def attach(self, runner: Runner) -> StoreRecorder:
        """Kept for callers that attach the runner: the transitions carry everything the
        recorder stores (values, log files, workers), so it reads nothing from ``runner``."""
        self.runner = runner
        return self

    # ------------------------------------------------------------------ listener
    def run_started(self, run: RunInfo) -> None:
        self._info = run
        self.run_id = run.run_id
        graph = run.graph
        tasks = snapshot_of(graph)
        tasks_json = snapshot_json(tasks)  # hashed here, stored by begin_run: made once
        reused = tuple(run.reused)
        # Starts name their log file relative to the run's log folder (stored once).
        log_dir = None
        if run.log_dir is not None:
            log_dir = os.path.abspath(run.log_dir)
            self._log_prefix = f"{run.log_dir}{os.sep}"
        source_text = None
        if self.source_path is not None:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                source_text = Path(self.source_path).read_text("utf-8")
        record = RunRecord(
            id=run.run_id, pipeline=graph.name, status=StoredStatus.RUNNING, tasks=tasks,
            params=dict(run.params), started_at=run.started_at, host=self._host,
            user=_user(), pid=os.getpid(), dag_hash=json_hash(tasks_json), tasks_json=tasks_json,
            source_path=self.source_path, source_text=source_text, reused=reused,
            resumed_from=self.resume_of, lease_owner=self._owner,
            owner_process=current_process(), log_dir=log_dir,
        )
        event = EventRecord("run_started", run.started_at, data={
            "concurrency": run.concurrency, "fail_fast": run.fail_fast,
            "log_dir": run.log_dir, "resumed_from": self.resume_of, "reused": list(reused),
            "owner": self._owner})
        self.store.begin_run(record, lease_s=self.lease, resume_of=self.resume_of,
                             events=[event])
        self._thread = threading.Thread(target=self._write_loop, name=f"corral-store-{run.run_id}",
                                        daemon=True)  # a crashed run must not hang the exit
        self._thread.start()

    def transitions(self, batch: list[Transition]) -> None:
        """Pack ``batch`` (see :data:`~corral.store._records.PACKED_FIELDS`) and queue it with
        its values: the hot path, three per task, so one pass, the common states first, and no
        records (the state stays the enum: a ``str``, stored as its value). Everything comes
        from the transitions themselves (value, log file, worker), none from the runner. What
        is costly and rare (formatting a traceback) is left to the writer: a failure's entry
        carries its exception in its traceback's place."""
        running_since = self._running_since
        prefix = self._log_prefix
        cut = len(prefix)
        entries: list[list[Any]] = []
        add = entries.append
        values: list[tuple[str, Any]] = []
        for task, state, attempt, at, error, exc, value, log, worker in batch:
            if state is RUNNING:
                running_since[task] = at
                if log is None:
                    add([task, state, attempt, at])
                else:  # in the run's log folder (RunRecord.log_dir): its name is enough
                    add([task, state, attempt, at, None, None, None, None,
                         log[cut:] if prefix and log.startswith(prefix)
                         else os.path.abspath(log)])
            elif state is SUCCEEDED and worker is None:
                values.append((task, value))
                began = running_since.pop(task, None)
                add([task, state, attempt, at] if began is None
                    else [task, state, attempt, at, at - began])
            elif state not in _ENDS_ATTEMPT and error is None:  # ready, upstream_failed
                add([task, state, attempt, at])
            else:
                if state is SUCCEEDED:
                    values.append((task, value))
                began = running_since.pop(task, None) if state in _ENDS_ATTEMPT else None
                duration = None if began is None else at - began
                # (the exception sits where its traceback goes, until the writer formats it)
                add(packed_entry(task, state, attempt, at, duration, error, exc, None, None,
                                 worker))
        self._queue.put((entries, values))

    def tasks_added(self, graph: Graph, ids: list[str]) -> None:
        """The run grew (a ``for_each`` fan-out): the new tasks' snapshots go to the event
        log as a ``tasks_added`` event, queued before their first transition, so that the
        stored run (:meth:`Store.load_run`) knows them wherever their history is read."""
        index = graph.index
        tasks = snapshot_of(graph, [index[t] for t in ids])
        event = EventRecord("tasks_added", datetime.now(UTC),
                            data={"tasks": [list(t) for t in tasks]})
        self._queue.put(([], [], [event]))

    def context_changed(self, changed: dict[str, Any], deleted: list[str]) -> None:
        """Tasks changed the run's context (corral.context()): a ``context`` event, queued
        before the transitions of the turn that saw it (so a task's success is never stored
        without its changes)."""
        event = EventRecord("context", datetime.now(UTC),
                            data={"set": changed, "deleted": deleted})
        self._queue.put(([], [], [event]))

    def run_finished(self, result: RunResult) -> None:
        self.result = result
        self._queue.put((_FINISH, result))
        self._finishing.set()
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop the writer without recording an end (the run stays unfinished)."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put((_FINISH, None))
            self._finishing.set()
            self._thread.join()

    # ------------------------------------------------------------------ writer thread
    def _write_loop(self) -> None:
        q = self._queue
        store = self.store
        run_id = self.run_id
        assert run_id is not None
        last_flush = 0.0
        next_renewal = time.monotonic() + self.renew_every
        next_checkpoint = time.monotonic() + CHECKPOINT_INTERVAL
        done = False
        while not done:
            now = time.monotonic()
            try:
                items = [q.get(timeout=max(0.0, next_renewal - now))]
            except queue.Empty:
                items = []
            # Group commit: let more arrive until flush_interval has passed since the last
            # commit. Sleep through it rather than wake for each item: each wake-up takes the
            # GIL from the run loop. The end of the run cuts the sleep short.
            if items and items[0][0] is not _FINISH:
                wait = last_flush + self.flush_interval - time.monotonic()
                if wait > 0:
                    self._finishing.wait(wait)
                while len(items) < self.max_batch:
                    try:
                        items.append(q.get_nowait())
                    except queue.Empty:
                        break
                    if items[-1][0] is _FINISH:
                        break
            finish: tuple[StoredStatus, Any] | None = None
            result: RunResult | None = None
            if items and items[-1][0] is _FINISH:
                done = True
                result = items.pop()[1]
            if self.error is not None:
                continue  # the history must stay a prefix: write nothing after a failure
            transitions: list[list[Any]] = []
            values: list[tuple[str, Any]] = []
            events: list[EventRecord] = []
            for entries, their_values, *their_events in items:
                transitions += entries
                if their_values:
                    values += their_values
                if their_events:
                    events += their_events[0]
            self._finish_entries(transitions)
            if result is not None:
                finish = (StoredStatus(str(result.status)), result.finished_at)
                events.append(EventRecord("run_finished", result.finished_at, data={
                    "status": str(result.status), "counts": result.counts(),
                    "signal": result.signal, "critical_path": result.critical_path,
                    **({"breakers": result.breaker_dicts()} if result.breakers else {})}))
            now = time.monotonic()
            lease = None
            if now >= next_renewal:
                lease = (self._owner, self.lease)
                next_renewal = now + self.renew_every
            if not (transitions or values or events or lease or finish):
                continue
            try:
                store.write(run_id, transitions=transitions, values=values, events=events,
                            lease=lease, finish=finish)
            except Exception as exc:
                self.error = exc if isinstance(exc, CorralError) else BrokenStore(
                    f"the recorder failed: {type(exc).__name__}: {exc}", url=store.url)
                if self.error is not exc:
                    self.error.__cause__ = exc
            last_flush = time.monotonic()
            self.flushes += 1
            if not done and self.error is None and last_flush >= next_checkpoint:
                # Between commits, while the run goes on: never in the commit that ends it.
                with contextlib.suppress(BrokenStore):  # upkeep; the history is committed
                    store.checkpoint()
                next_checkpoint = time.monotonic() + CHECKPOINT_INTERVAL

    @staticmethod
    def _finish_entries(entries: list[list[Any]]) -> None:
        """Turn the exception the listener left in a failure's entry into what is stored: its
        traceback and exit code. Off the run loop, on the writer."""
        for k, entry in enumerate(entries):
            if len(entry) >= 7 and isinstance(entry[6], BaseException):  # [..., error, exc]
                exc = entry[6]
                code = getattr(exc, "exit_code", None)
                entries[k] = packed_entry(*entry[:6], "".join(traceback.format_exception(exc)),
                                          code if isinstance(code, int) else None, *entry[8:])


def _secs(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
