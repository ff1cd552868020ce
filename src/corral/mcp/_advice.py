"""What an agent is told about a DAG and about a run: pure functions over a validated
:class:`~corral._graph.Graph` (with durations) and over a stored run's details
(:func:`corral.cli._history.run_details`). No store, no I/O, no clock.

::

    suggest(graph, durations, concurrency, ...) -> [Suggestion]   optimize_dag_structure
    analyse(details, concurrency)               -> dict           analyze_dag_performance

Each suggestion names its kind, the tasks it is about, what to do, and the expected gain in
seconds of makespan (an upper estimate from the plan's durations, never a promise). Levels,
the critical path and the lower bound are :mod:`corral._plan`'s; this module only reads them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral._graph import Graph
from corral._plan import make_plan, realised_critical_path

__all__ = ["MAX_LISTED", "MAX_PAIRWISE", "Suggestion", "analyse", "redundant_edges", "suggest"]

# Reachability is kept as one bitset per task (n² bits): past this many tasks the checks that
# need it (redundant edges, serialised resources) are skipped, and the answer says so.
MAX_PAIRWISE = 5000
# At most this many redundant edges are listed one by one (an answer is read by a model).
MAX_LISTED = 50
# A task on the critical path is worth splitting when it is this share of the path or more.
SPLIT_SHARE = 0.25
# ... and this many times the median task.
LONG_FACTOR = 2.0
# An estimate is "far from history" when one is more than this many times the other.
FAR_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One concrete change, with the makespan it could save (seconds, from the plan)."""

    kind: str
    message: str
    tasks: list[str] = field(default_factory=list)
    expected_gain_s: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "tasks": self.tasks,
                "expected_gain_s": round(self.expected_gain_s, 3), "detail": self.detail}


def _s(seconds: float) -> str:
    """Seconds for a message: to the millisecond, without trailing zeros."""
    return f"{round(seconds, 3):g}"


def _ancestors(graph: Graph) -> list[int]:
    """Per task, the bitset of every task it depends on, transitively."""
    anc = [0] * len(graph)
    for i in graph.order:
        bits = 0
        for j in graph.deps[i]:
            bits |= anc[j] | (1 << j)
        anc[i] = bits
    return anc


def redundant_edges(graph: Graph, anc: Sequence[int] | None = None) -> list[tuple[str, str]]:
    """Edges ``a -> b`` implied by another path from ``a`` to ``b``: dropping them changes
    no order, only what a reader (and the scheduler) has to check."""
    anc = anc if anc is not None else _ancestors(graph)
    out: list[tuple[str, str]] = []
    for i in range(len(graph)):
        deps = graph.deps[i]
        if len(deps) < 2:
            continue
        through_others = 0
        for k in deps:
            through_others |= anc[k]
        out.extend((graph.ids[j], graph.ids[i]) for j in deps if through_others >> j & 1)
    return out


def _independent(anc: Sequence[int], a: int, b: int) -> bool:
    return not (anc[a] >> b & 1 or anc[b] >> a & 1)


def _serialising(graph: Graph, durations: Sequence[float], anc: Sequence[int]) -> list[Suggestion]:
    """Resources whose requests keep tasks that could run together from doing so."""
    out: list[Suggestion] = []
    users: dict[str, list[int]] = {}
    for i, spec in enumerate(graph.specs):
        for name, amount in spec.resources.items():
            if amount > 0:
                users.setdefault(name, []).append(i)
    for name, tasks in sorted(users.items()):
        cap = graph.capacity.get(name, 0.0)
        conflicts: set[int] = set()
        # Largest requests first: once a pair fits side by side, every later one does too.
        need = {i: graph.specs[i].resources[name] for i in tasks}
        tasks.sort(key=need.__getitem__, reverse=True)
        for x, a in enumerate(tasks):
            for b in tasks[x + 1:]:
                if need[a] + need[b] <= cap:
                    break
                if _independent(anc, a, b):
                    conflicts.update((a, b))
        if not conflicts:
            continue
        ids = [graph.ids[i] for i in sorted(conflicts)]  # in definition order
        total = sum(durations[i] for i in conflicts)
        gain = total - max(durations[i] for i in conflicts)
        hogs = [graph.ids[i] for i in sorted(conflicts)
                if graph.specs[i].resources[name] >= cap]
        what = (f"task(s) {', '.join(hogs)} request all of it" if hogs
                else "their requests do not fit side by side")
        out.append(Suggestion(
            "serialising_resource",
            f"resource {name!r} (capacity {_s(cap)}) serialises {len(ids)} tasks that do not "
            f"depend on each other ({what}): they hold it one at a time for {_s(total)} s. "
            f"Raise its capacity in the pipeline's resources:, or lower the requests.",
            ids, gain, {"resource": name, "capacity": cap,
                        "requests": {graph.ids[i]: graph.specs[i].resources[name]
                                     for i in sorted(conflicts)}}))
    return out


def suggest(
    graph: Graph,
    durations: Sequence[float],
    *,
    concurrency: int,
    estimated: Mapping[str, float],
    history: Mapping[str, float],
) -> tuple[list[Suggestion], list[str]]:
    """Suggestions for ``graph``, and notes on what was not checked.

    ``durations`` are the plan's (estimate, else history, else 1 s); ``estimated`` the tasks'
    own estimates; ``history`` what earlier runs took (for estimates far from it).
    """
    notes: list[str] = []
    out: list[Suggestion] = []
    n = len(graph)
    plan = make_plan(graph, workers=concurrency, history=dict(zip(graph.ids, durations,
                                                                   strict=True)))
    if n <= MAX_PAIRWISE:
        anc = _ancestors(graph)
        edges = redundant_edges(graph, anc)
        if len(edges) > MAX_LISTED:
            notes.append(f"{len(edges)} redundant edges: the first {MAX_LISTED} are listed")
        for a, b in edges[:MAX_LISTED]:
            out.append(Suggestion(
                "redundant_edge",
                f"the edge {a} -> {b} is implied by another path from {a} to {b}: drop "
                f"{a!r} from the depends_on of {b!r}; the order stays the same",
                [a, b], 0.0, {"edge": [a, b]}))
        out.extend(_serialising(graph, durations, anc))
    else:
        notes.append(f"{n} tasks: redundant edges and serialising resources are only "
                     f"checked up to {MAX_PAIRWISE}")
    by_work = plan.work_s / concurrency
    cp = plan.critical_path_s
    if n and cp >= by_work and len(plan.critical_path) >= 3:
        out.append(Suggestion(
            "long_chain",
            f"the chain {' -> '.join(plan.critical_path)} ({_s(cp)} s) bounds the makespan: no "
            f"concurrency makes the run shorter. Cut dependencies along it, or shorten its "
            f"tasks; with the work spread over {concurrency} slots the bound would be "
            f"{_s(by_work)} s",
            list(plan.critical_path), cp - by_work,
            {"critical_path_s": cp, "work_over_concurrency_s": by_work}))
    if n and concurrency > plan.width:
        out.append(Suggestion(
            "concurrency_above_width",
            f"concurrency {concurrency} is above what the graph can use (its widest level has "
            f"{plan.width} tasks): {concurrency - plan.width} slots stay idle; set concurrency "
            f"to {plan.width}",
            [], 0.0, {"concurrency": concurrency, "width": plan.width}))
    elif n and by_work > cp:
        enough = min(plan.width, math.ceil(plan.work_s / cp)) if cp > 0 else plan.width
        if enough > concurrency:
            out.append(Suggestion(
                "concurrency_below_graph",
                f"concurrency {concurrency} makes total work the bound ({_s(by_work)} s > "
                f"critical path {_s(cp)} s): {enough} slots would reach the critical path",
                [], by_work - max(cp, plan.work_s / enough),
                {"concurrency": concurrency, "suggested": enough}))
    if n > 1 and cp > 0:
        typical = statistics.median(durations)
        for task in plan.critical_path:
            d = durations[graph.index[task]]
            # Long for this graph, and a large share of the path only it can shorten.
            if d >= SPLIT_SHARE * cp and d >= LONG_FACTOR * typical:
                out.append(Suggestion(
                    "split_task",
                    f"task {task!r} takes {_s(d)} s, {d / cp:.0%} of the critical path: split "
                    f"it into parts that can run side by side",
                    [task], d / 2, {"duration_s": d, "share_of_critical_path": d / cp}))
    unknown = [s.id for s in graph.specs if s.id not in estimated and s.id not in history]
    if unknown:
        out.append(Suggestion(
            "missing_estimate",
            f"{len(unknown)} task(s) have no estimate and no history, so the plan counts "
            f"1 s for each: add estimate: (seconds) to plan and prioritise them right",
            unknown, 0.0))
    for task, est in estimated.items():
        seen = history.get(task)
        if seen and seen > 0 and est > 0 and max(est / seen, seen / est) > FAR_FACTOR:
            out.append(Suggestion(
                "estimate_off",
                f"task {task!r} is estimated at {_s(est)} s but took {_s(seen)} s: update its "
                f"estimate, the scheduler ranks tasks by it",
                [task], 0.0, {"estimate_s": est, "history_s": seen}))
    return out, notes


# --------------------------------------------------------------------------- a run, after


def _earliest_latest(
    order: Sequence[str], deps: Mapping[str, Sequence[str]], took: Mapping[str, float]
) -> tuple[dict[str, float], float]:
    """Per task its slack (how late it could have finished without delaying the end, with
    unlimited slots and the durations it had), and the length of the longest chain."""
    finish: dict[str, float] = {}
    for t in order:
        finish[t] = max((finish[d] for d in deps[t]), default=0.0) + took[t]
    end = max(finish.values(), default=0.0)
    dependents: dict[str, list[str]] = {t: [] for t in order}
    for t in order:
        for d in deps[t]:
            dependents[d].append(t)
    latest: dict[str, float] = {}
    for t in reversed(order):
        latest[t] = min((latest[u] - took[u] for u in dependents[t]), default=end)
    return {t: round(latest[t] - finish[t], 6) for t in order}, end


def _topological(deps: Mapping[str, Sequence[str]]) -> list[str]:
    from graphlib import TopologicalSorter

    return list(TopologicalSorter({t: [d for d in ds if d in deps]
                                   for t, ds in deps.items()}).static_order())


def analyse(details: Mapping[str, Any], deps: Mapping[str, Sequence[str]],
            concurrency: int, *, buckets: int = 10) -> dict[str, Any]:
    """A finished (or stopped) run, read from its history: what bounded it and how far it was
    from what its graph allowed with the durations its tasks really had.

    ``deps`` is each task's dependencies (as the run stored them), ``concurrency`` the run's
    slots. Utilisation lays each task's attempts end to end from its first start (the waits
    between retries are not counted as busy)."""
    tasks: Mapping[str, Any] = details["tasks"]
    took: dict[str, float] = {}
    spans: list[tuple[float, float]] = []
    ends: dict[str, float] = {}
    retried: dict[str, int] = {}
    failed: dict[str, str | None] = {}
    for tid, t in tasks.items():
        attempts = t["attempts"]
        if len(attempts) > 1:
            retried[tid] = len(attempts)
        if t["state"] == "failed":
            failed[tid] = t["error"]
        first = t["started_s"]
        if first is None or t["span_s"] is None:
            took[tid] = 0.0
            continue
        took[tid] = float(t["duration_s"] or 0.0)
        ends[tid] = first + t["span_s"]
        start = first
        for a in attempts:
            if a["duration_s"] is not None:
                spans.append((start, start + a["duration_s"]))
                start += a["duration_s"]
    order = _topological(deps)
    slack, longest = _earliest_latest(order, deps, took)
    makespan = float(details["duration_s"] or max(ends.values(), default=0.0))
    work = sum(b - a for a, b in spans)
    width = max(1, concurrency)
    lower = max(longest, work / width)
    realised = realised_critical_path(ends, lambda t: deps.get(t, ()))
    planned = [t for t in order if slack[t] == 0.0 and took[t] > 0]
    utilisation: list[dict[str, float]] = []
    if makespan > 0 and spans:
        step = makespan / buckets
        for k in range(buckets):
            lo, hi = k * step, (k + 1) * step
            busy = sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in spans)
            utilisation.append({"from_s": round(lo, 3), "to_s": round(hi, 3),
                                "busy_slots": round(busy / step, 3),
                                "utilisation": round(busy / (step * width), 3)})
    return {
        "run_id": details["run_id"],
        "pipeline": details["pipeline"],
        "status": details["status"],
        "makespan_s": makespan,
        "concurrency": width,
        "work_s": round(work, 6),
        "longest_chain_s": round(longest, 6),
        "lower_bound_s": round(lower, 6),
        "gap_to_lower_bound_s": round(max(0.0, makespan - lower), 6),
        "efficiency": round(lower / makespan, 3) if makespan > 0 else None,
        "realised_critical_path": realised,
        "bounding_tasks": [{"task": t, "duration_s": took.get(t, 0.0)} for t in realised],
        "zero_slack_chain": planned,
        "slack_s": slack,
        "utilisation": utilisation,
        "mean_utilisation": round(work / (makespan * width), 3) if makespan > 0 else None,
        "retried": retried,
        "failed": failed,
    }
