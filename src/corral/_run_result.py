"""What a finished (or running) run says about itself: its :class:`RunResult`, each task's
:class:`TaskResult`, the realised critical path and the run's own lower bound.

Mixed into :class:`corral._runner.Runner`, whose per-task tables it reads; made on demand
(:class:`TaskTable` asks for a task's record only when someone looks at it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral._capture import log_name
from corral._context import RunContext
from corral._graph import Graph
from corral._limits import BreakerChange
from corral._result import RunResult, RunStatus, TaskResult, TaskTable
from corral._spec import TaskState

if TYPE_CHECKING:
    from corral._scheduler import Scheduler
    from corral.executors._base import Executor

__all__ = ["ResultOfRun"]


class ResultOfRun:
    """The runner's part that reports: everything here reads, nothing changes the run."""

    graph: Graph
    scheduler: Scheduler
    concurrency: int
    run_id: str
    log_dir: Path | None
    values: list[Any]
    errors: list[BaseException | None]
    first_start: list[float | None]
    attempt_start: list[float]
    end: list[float | None]
    signal: int | None
    error: str | None
    breaker_changes: list[BreakerChange]
    context: RunContext
    _started_at: datetime
    _executors: dict[str, Executor]
    _executor_of: Sequence[str]
    # The log directory's files, listed once the run has ended (see _has_log).
    _logs_listed: frozenset[str] | None = None

    def _result(self) -> RunResult:
        sched = self.scheduler
        counts = sched.counts
        if self.signal is not None:
            status = RunStatus.INTERRUPTED
        else:
            fine = counts[TaskState.SUCCEEDED] + counts[TaskState.SKIPPED]
            if counts[TaskState.FAILED]:
                specs = self.graph.specs
                fine += sum(1 for i, s in enumerate(sched.state)
                            if s is TaskState.FAILED and specs[i].allow_failure)
            ok = fine == len(self.graph) and self.error is None
            status = RunStatus.SUCCEEDED if ok else RunStatus.FAILED
        return RunResult(
            run_id=self.run_id,
            pipeline=self.graph.name,
            status=status,
            started_at=self._started_at,
            finished_at=datetime.now(UTC),
            tasks=TaskTable(self.graph.index, self.task_result, sched.state),
            critical_path=self.realised_critical_path(),
            signal=self.signal or None,
            error=self.error,
            breakers=tuple(self.breaker_changes),
            lower_bound=self._own_lower_bound,
            context=self.context.snapshot(),
        )

    def _own_lower_bound(self) -> float:
        """The run's own lower bound: from what each task's last attempt took (0 for tasks
        that did not run, reused ones included), on this run's concurrency and its
        executors' slots."""
        from corral._plan import lower_bound

        took = [0.0 if end is None or not attempts else max(0.0, end - start)
                for end, start, attempts in zip(self.end, self.attempt_start,
                                                self.scheduler.attempts, strict=True)]
        slots = {name: e.slots for name, e in self._executors.items() if e.slots is not None}
        return lower_bound(self.graph, took, self.concurrency, slots)

    def task_result(self, i: int) -> TaskResult:
        """The record of task ``i`` as it stands (made on demand: see :class:`TaskTable`)."""
        sched = self.scheduler
        task_id = self.graph.ids[i]
        first, end = self.first_start[i], self.end[i]
        start = self._started_at
        log = None
        if self.log_dir is not None and sched.attempts[i]:
            name = f"{log_name(task_id)}.{sched.attempts[i]}.log"
            # an attempt on an executor that writes no log unless it prints may have none
            executor = self._executors.get(self._executor_of[i])
            if (executor is not None and executor.writes_logs) or self._has_log(name):
                log = f"{self.log_dir}{os.sep}{name}"
        state = sched.state[i]
        return TaskResult(
            id=task_id,
            state=state,
            attempts=sched.attempts[i],
            value=self.values[i],
            error=self.errors[i] if state is not TaskState.SUCCEEDED else None,
            started_at=None if first is None else start + timedelta(seconds=first),
            finished_at=None if end is None else start + timedelta(seconds=end),
            duration_s=(end - first) if first is not None and end is not None else None,
            executor=self._executor_of[i],
            log_path=log,
        )

    def _has_log(self, name: str) -> bool:
        """Whether the log file ``name`` exists. Once the run has ended, from one listing of
        the log directory instead of a ``stat`` per task (a result of 10,000 tasks asks
        10,000 times); while it runs, from the file system each time."""
        assert self.log_dir is not None
        if self.scheduler.is_active():
            return os.path.exists(os.path.join(self.log_dir, name))
        if self._logs_listed is None:
            try:
                self._logs_listed = frozenset(os.listdir(self.log_dir))
            except OSError:
                self._logs_listed = frozenset()
        return name in self._logs_listed

    def realised_critical_path(self) -> list[str]:
        """The chain that decided the makespan (:func:`corral._plan.realised_critical_path`)."""
        from corral._plan import realised_critical_path

        ended = {i: t for i, t in enumerate(self.end) if t is not None}
        path = realised_critical_path(ended, self.graph.deps.__getitem__)
        return [self.graph.ids[i] for i in path]
