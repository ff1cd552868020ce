"""Which tasks a resume may skip: a pure function of the graph now and the run then.

A task's stored value is reused only when all of these hold, else it re-runs, and the plan
says why (the first reason that applies, in this order):

1. it succeeded then                       "failed", "never ran", "was running", "cancelled"...
2. its definition is unchanged             "definition changed" (TaskSpec.fingerprint)
3. no task it depends on re-runs           "upstream X re-runs" (so everything downstream
                                           of a change runs again)
4. its value could be stored and read      "value not stored: ..."

Tasks are visited in topological order, so rule 3 sees every upstream decision first. The
result feeds the runner directly: ``Runner(graph, done=plan.reuse)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from corral._graph import Graph
from corral._spec import TaskState
from corral.store._base import MISSING, StoredRun

__all__ = ["ResumePlan", "plan_resume"]

# Why a task that did not succeed must run again, by the state it was left in.
_REASON = {
    None: "never ran",
    TaskState.PENDING: "never ran",
    TaskState.READY: "never ran",
    TaskState.RUNNING: "was running",
    TaskState.RETRY_WAIT: "failed",
    TaskState.FAILED: "failed",
    TaskState.SKIPPED: "skipped",
    TaskState.UPSTREAM_FAILED: "upstream failed",
    TaskState.CANCELLED: "cancelled",
}


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """``reuse`` maps task ids to their stored values (pass as ``done=``); ``rerun`` maps
    every other task id to the reason it runs again."""

    reuse: Mapping[str, Any] = field(default_factory=dict)
    rerun: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"reuse {len(self.reuse)}, re-run {len(self.rerun)}"]
        lines += [f"  {task}: {why}" for task, why in self.rerun.items()]
        return "\n".join(lines)


def plan_resume(graph: Graph, stored: StoredRun) -> ResumePlan:
    """Decide, for each task of ``graph``, whether ``stored`` lets it be skipped."""
    reuse: dict[str, Any] = {}
    rerun: dict[str, str] = {}
    ids = graph.ids
    for i in graph.order:
        task_id = ids[i]
        then = stored.tasks.get(task_id)
        if then is None:
            rerun[task_id] = "not in the earlier run"
            continue
        if then.state is not TaskState.SUCCEEDED:
            rerun[task_id] = _REASON[then.state]
            continue
        if then.fingerprint != graph.specs[i].fingerprint():
            rerun[task_id] = "definition changed"
            continue
        upstream = next((ids[j] for j in graph.deps[i] if ids[j] in rerun), None)
        if upstream is not None:
            rerun[task_id] = f"upstream {upstream} re-runs"
            continue
        if then.value is MISSING:
            rerun[task_id] = f"value not stored: {then.value_error or 'unknown'}"
            continue
        reuse[task_id] = then.value
    # Report in definition order, whatever order the decisions were made in.
    return ResumePlan(
        reuse={t: reuse[t] for t in ids if t in reuse},
        rerun={t: rerun[t] for t in ids if t in rerun},
    )
