"""What a run produced: plain records, built once when the run ends.

:class:`RunResult` maps every task id to a :class:`TaskResult` (final state, return value,
error, number of attempts, timings). ``to_dict`` gives the JSON shape the CLI prints with
``--json`` and the API serves.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from corral._limits import BreakerChange
from corral._spec import TaskState

__all__ = ["RunResult", "RunStatus", "TaskResult", "TaskTable"]


class RunStatus(enum.StrEnum):
    """How a run ended."""

    SUCCEEDED = "succeeded"  # every task succeeded (failures of allow_failure tasks aside)
    FAILED = "failed"  # a task failed, or could not run because of a failure
    INTERRUPTED = "interrupted"  # stopped by a signal (Ctrl-C, SIGTERM) or cancelled


@dataclass(frozen=True, slots=True)
class TaskResult:
    """How one task ended in a run."""

    id: str
    state: TaskState
    attempts: int = 0
    value: Any = None
    error: BaseException | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    executor: str = ""
    log_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.state is TaskState.SUCCEEDED

    def error_message(self) -> str | None:
        if self.error is None:
            return None
        text = str(self.error)
        name = type(self.error).__name__
        return f"{name}: {text}" if text else name

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "attempts": self.attempts,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 6),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "executor": self.executor,
            "error": self.error_message(),
            "log": self.log_path,
        }


class TaskTable(Mapping[str, TaskResult]):
    """Task id to :class:`TaskResult`, each record made when first read.

    A run of 100,000 tasks should not spend more time building records nobody reads than it
    spent running the tasks. ``make(i)`` builds the record of task ``i`` from the run's arrays,
    which no longer change once the run has ended.
    """

    __slots__ = ("_cache", "_index", "_make", "states")

    def __init__(
        self,
        index: Mapping[str, int],
        make: Callable[[int], TaskResult],
        states: Sequence[TaskState] | None = None,
    ) -> None:
        self._index = index
        self._make = make
        self._cache: dict[str, TaskResult] = {}
        self.states = states  # each task's final state, by index: counted without records

    def __getitem__(self, task_id: str) -> TaskResult:
        result = self._cache.get(task_id)
        if result is None:
            result = self._cache[task_id] = self._make(self._index[task_id])
        return result

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"<TaskTable of {len(self)} tasks>"


@dataclass(frozen=True, slots=True, repr=False)
class RunResult(Mapping[str, TaskResult]):
    """The outcome of a run: a mapping from task id to :class:`TaskResult`."""

    run_id: str
    pipeline: str
    status: RunStatus
    started_at: datetime
    finished_at: datetime
    tasks: Mapping[str, TaskResult]
    critical_path: list[str] = field(default_factory=list)
    signal: int | None = None
    error: str | None = None  # why the run failed as a whole (a stall), beyond its tasks
    # Circuit breakers that opened, half-opened or closed during the run, in order.
    breakers: tuple[BreakerChange, ...] = ()
    # max(critical path, work / concurrency, a narrower executor's work / its slots) with the
    # durations the tasks' last attempts took in this run: what a perfect order could have
    # done (None: not known, e.g. loaded runs).
    # Given as a number, or as a function computed on first use (see lower_bound_s): a run
    # whose caller never looks does not pay for its ranks.
    lower_bound: float | Callable[[], float | None] | None = None
    # The run's shared context (corral.context()) as it ended.
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.SUCCEEDED

    def __repr__(self) -> str:
        # Short on purpose: asyncio may repr a finished main task, result included, and a
        # field-by-field repr of 100,000 tasks would cost more than running them.
        return (f"<RunResult {self.run_id} {self.pipeline!r} {self.status}: "
                f"{len(self.tasks)} tasks>")

    @property
    def lower_bound_s(self) -> float | None:
        """The run's own lower bound in seconds (see ``lower_bound``), or None."""
        bound = self.lower_bound
        if callable(bound):
            bound = bound()
            object.__setattr__(self, "lower_bound", bound)  # computed once
        return bound

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def __getitem__(self, task_id: str) -> TaskResult:
        return self.tasks[task_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def counts(self) -> dict[str, int]:
        """How many tasks ended in each state."""
        tasks = self.tasks
        if isinstance(tasks, TaskTable) and tasks.states is not None:
            return {str(state): n for state, n in Counter(tasks.states).items()}
        return {str(state): n for state, n in Counter(t.state for t in tasks.values()).items()}

    @property
    def outputs(self) -> dict[str, Any]:
        """Return values of the succeeded tasks, by task id."""
        return {k: t.value for k, t in self.tasks.items() if t.ok}

    def failures(self) -> dict[str, TaskResult]:
        """Tasks that failed (allowed failures included)."""
        return {k: t for k, t in self.tasks.items() if t.state is TaskState.FAILED}

    def breaker_dicts(self) -> list[dict[str, Any]]:
        """The circuit breakers' changes as plain data (JSON output, the store)."""
        return [{"breaker": c.breaker, "state": str(c.state), "at": round(c.at, 6)}
                for c in self.breakers]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "status": str(self.status),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_s": round(self.duration_s, 6),
            "counts": self.counts(),
            "critical_path": self.critical_path,
            "lower_bound_s": None if self.lower_bound_s is None else round(self.lower_bound_s, 6),
            "error": self.error,
            "breakers": self.breaker_dicts(),
            "context": dict(self.context),
            "tasks": {k: t.to_dict() for k, t in self.tasks.items()},
        }


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def recorded_breakers(events: Iterable[Any]) -> list[dict[str, Any]]:
    """The circuit breakers' changes of a stored run, from its ``run_finished`` event (as
    :meth:`RunResult.breaker_dicts` wrote them); none for a run that has not ended."""
    for e in events:
        if e.kind == "run_finished":
            changes = e.data.get("breakers")
            if isinstance(changes, list):
                return [c for c in changes if isinstance(c, dict)]
    return []
