"""Static analysis of a graph: levels, width, critical path and the lower bound on makespan.

Durations come from each task's ``estimate`` (or a history of earlier runs, or 1 s when
nothing is known). The same pass yields every task's *upward rank* — the longest path from the
task to the end of the graph, itself included — which the scheduler uses as its tie-breaker:
starting the task with the longest tail first is what shortens makespan (HEFT's upward rank).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard, TypeVar

from corral._graph import Graph

__all__ = [
    "Plan",
    "durations_of",
    "estimate_sources",
    "is_seconds",
    "lower_bound",
    "make_plan",
    "prior_durations",
    "realised_critical_path",
    "upward_ranks",
    "usable_history",
]

# Seconds assumed for a task that has neither an estimate nor a history.
DEFAULT_ESTIMATE = 1.0


def is_seconds(value: object) -> TypeGuard[float]:
    """Whether ``value`` can be a duration: a finite number >= 0 (not a bool)."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def usable_history(history: Mapping[str, object]) -> tuple[dict[str, float], list[str]]:
    """The durations of ``history`` that can be used (finite numbers >= 0), and the ids of the
    tasks whose stored duration cannot (damaged history: ignored, for a warning)."""
    good: dict[str, float] = {}
    bad: list[str] = []
    for task_id, seconds in history.items():
        if is_seconds(seconds):
            good[task_id] = float(seconds)
        else:
            bad.append(task_id)
    return good, bad


def prior_durations(
    graph: Graph, history: Mapping[str, float] | None = None
) -> list[float | None]:
    """Each task's duration as known before the run: its estimate, else its history, else
    None (to be learned while the run goes)."""
    history = history or {}
    return [float(s.estimate) if s.estimate is not None else history.get(s.id)
            for s in graph.specs]


def durations_of(graph: Graph, history: Mapping[str, float] | None = None) -> list[float]:
    """Each task's expected duration: its estimate, else its history, else 1 s."""
    return [DEFAULT_ESTIMATE if d is None else d for d in prior_durations(graph, history)]


def estimate_sources(graph: Graph, history: Mapping[str, float] | None = None) -> dict[str, int]:
    """How many tasks take their duration from an ``estimate`` (given), from the store's
    history, or from nowhere (none: 1 s in a plan, learned per task kind in a run)."""
    history = history or {}
    given = sum(1 for s in graph.specs if s.estimate is not None)
    known = sum(1 for s in graph.specs if s.estimate is None and s.id in history)
    return {"given": given, "history": known, "none": len(graph) - given - known}


def upward_ranks(graph: Graph, durations: Sequence[float]) -> list[float]:
    """Longest path from each task to any sink, the task's own duration included."""
    rank = list(durations)
    deps_rank = [0.0] * len(rank)
    for i in reversed(graph.order):
        r = rank[i] + deps_rank[i]
        rank[i] = r
        for j in graph.deps[i]:
            deps_rank[j] = max(deps_rank[j], r)
    return rank


def lower_bound(
    graph: Graph, durations: Sequence[float], workers: int,
    executor_slots: Mapping[str, int] | None = None,
) -> float:
    """``max(critical path, work / workers)`` for these durations: no schedule on ``workers``
    slots can be shorter (resources aside). ``executor_slots`` names executors that run fewer
    attempts at once (a process pool as wide as the CPUs): the work of each one's tasks over
    its slots bounds the run too."""
    critical_path = max(upward_ranks(graph, durations), default=0.0)
    bound = max(critical_path, sum(durations) / max(1, workers))
    for name, slots in (executor_slots or {}).items():
        if slots < workers:
            work = sum(d for d, e in zip(durations, graph.executors, strict=True) if e == name)
            bound = max(bound, work / max(1, slots))
    return bound


@dataclass(frozen=True, slots=True)
class Plan:
    """What a DAG will need before it runs."""

    levels: list[list[str]]
    width: int
    critical_path: list[str]
    critical_path_s: float
    work_s: float
    workers: int
    lower_bound_s: float
    n_tasks: int
    n_edges: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_tasks": self.n_tasks,
            "n_edges": self.n_edges,
            "levels": self.levels,
            "width": self.width,
            "critical_path": self.critical_path,
            "critical_path_s": self.critical_path_s,
            "work_s": self.work_s,
            "workers": self.workers,
            "lower_bound_s": self.lower_bound_s,
        }


def make_plan(
    graph: Graph, *, workers: int, history: Mapping[str, float] | None = None
) -> Plan:
    """Levels (longest distance from a root), width (the largest level: an estimate of peak
    parallelism), critical path and the makespan lower bound ``max(critical path, work / N)``.
    """
    n = len(graph)
    durations = durations_of(graph, history)
    level = [0] * n
    finish = [0.0] * n  # earliest finish with unlimited workers
    best_dep = [-1] * n
    for i in graph.order:
        start = 0.0
        lvl = 0
        for j in graph.deps[i]:
            if best_dep[i] == -1 or finish[j] > start:
                start = finish[j]
                best_dep[i] = j
            lvl = max(lvl, level[j] + 1)
        level[i] = lvl
        finish[i] = start + durations[i]
    levels: list[list[str]] = [[] for _ in range(max(level) + 1 if n else 0)]
    for i in graph.order:
        levels[level[i]].append(graph.ids[i])
    path: list[str] = []
    cp = 0.0
    if n:
        end = max(range(n), key=finish.__getitem__)
        cp = finish[end]
        while end != -1:
            path.append(graph.ids[end])
            end = best_dep[end]
        path.reverse()
    work = float(sum(durations))
    workers = max(1, workers)
    return Plan(
        levels=levels,
        width=max((len(lv) for lv in levels), default=0),
        critical_path=path,
        critical_path_s=cp,
        work_s=work,
        workers=workers,
        lower_bound_s=max(cp, work / workers),
        n_tasks=n,
        n_edges=sum(len(d) for d in graph.deps),
    )


K = TypeVar("K", bound=Hashable)


def realised_critical_path(end: Mapping[K, float], deps: Callable[[K], Iterable[K]]) -> list[K]:
    """The chain that decided a run's makespan, as it ran: from the task that ended last, step
    back to its dependency that ended last, until a task that waited on nothing that ran.

    ``end`` holds the tasks that ran, with when each ended (any one clock); ``deps(task)`` its
    dependencies. For a finished run (:class:`~corral.RunResult`) and a stored one alike."""
    if not end:
        return []
    task = _last_to_end(list(end), end, deps)
    path = [task]
    while True:
        ran = [d for d in deps(task) if d in end]
        if not ran:
            break
        task = _last_to_end(ran, end, deps)
        path.append(task)
    return path[::-1]


def _last_to_end(tasks: list[K], end: Mapping[K, float], deps: Callable[[K], Iterable[K]]) -> K:
    """Of ``tasks``, one that ended last; among several that ended at the same time (within a
    microsecond: a stored history's times, start + span, differ from the end in the last
    bits), one that none of the others waited for."""
    last = max(end[t] for t in tasks)
    tied = [t for t in tasks if last - end[t] <= 1e-6]
    if len(tied) > 1:
        upstream = {d for t in tied for d in deps(t)}
        tied = [t for t in tied if t not in upstream] or tied
    return tied[0]
