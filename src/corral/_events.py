"""Run events, for whoever watches a run: the live display, a store, the HTTP API.

The run loop delivers transitions to listeners in *batches*, once per loop iteration, and only
when a listener is attached: with none, the scheduler does not even record them. A listener
must be quick (it runs on the loop); one that does I/O queues the batch and writes it elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from corral._spec import TaskState

if TYPE_CHECKING:
    from corral._graph import Graph
    from corral._result import RunResult

__all__ = ["RunInfo", "RunListener", "Transition"]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What is known about a run when it starts. ``reused`` are the tasks it starts with as
    succeeded (a resume reuses their stored values; they make no other transition)."""

    run_id: str
    graph: Graph
    started_at: datetime
    concurrency: int
    fail_fast: bool
    log_dir: str | None
    params: dict[str, str]
    reused: tuple[str, ...] = ()


class Transition(NamedTuple):
    """Task ``task`` entered ``state`` at ``at`` (seconds on the run's clock, from its start).

    ``attempt`` is the attempt number it concerns (0 before the first attempt); ``error`` is a
    one-line message for failures, ``exception`` the exception itself. ``value`` is the task's
    return value when it succeeded (else None); ``log`` the attempt's log file when it starts
    running (None without logs; a file an in-process task never printed to may not exist);
    ``worker`` names who ran the attempt when the executor says (a remote worker; None for
    the local executors). Everything a listener needs is here: none reads the runner.

    A named tuple, not a frozen dataclass: a run makes three per task, and this builds five
    times faster.
    """

    task: str
    state: TaskState
    attempt: int
    at: float
    error: str | None = None
    exception: BaseException | None = None
    value: Any = None
    log: str | None = None
    worker: str | None = None


class RunListener(Protocol):
    """Receives a run's events. All three methods are called on the run loop.

    Optional, looked up by name: ``breaker_changed(change)`` (a circuit breaker changed) and
    ``tasks_added(graph, ids)`` (the run grew, a ``for_each`` fan-out: ``graph`` is the run's
    graph now, ``ids`` the new tasks, told before their first transition)."""

    def run_started(self, run: RunInfo) -> None: ...

    def transitions(self, batch: list[Transition]) -> None: ...

    def run_finished(self, result: RunResult) -> None: ...
