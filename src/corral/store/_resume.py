"""Resuming a run: which run, and which of its tasks it may skip.

One implementation, for ``corral resume RUN_ID``, ``corral run FILE --resume`` and
``dag.run(store=..., resume=...)``::

    prepare_resume(store, dag, run_id= | pipeline=)        -> Resume | None (nothing to resume)
      load_run (checked) ── NotResumable if it succeeded or was already resumed
      graph now: dag.validate(), the run's own tasks when resumed by id
      plan_resume(graph now, run then)                     -> ResumePlan (pure, below)
    corral._launch.launch(resume, store, ...)              -> Runner(done=plan.reuse)
      RunLocked while the run's lease is live                 + StoreRecorder(resume_of=run)

A dry run stops after ``prepare_resume`` (it may show a live run's plan); the store checks the
lease again, atomically, when the new run begins (``Store.begin_run``).

:func:`plan_resume` is a pure function of the graph now and the run then. A task's stored value
is reused only when all of these hold, else it re-runs, and the plan says why (the first
reason that applies, in this order):

1. it succeeded then                       "failed", "never ran", "was running", "cancelled"...
2. its definition is unchanged             "definition changed" (its fingerprint, or its
                                           dependencies: store._snapshot)
3. no task it depends on re-runs           "upstream X re-runs" (so everything downstream
                                           of a change runs again)
4. its value could be stored and read      "value not stored: ..."

Tasks are visited in topological order, so rule 3 sees every upstream decision first. The
result feeds the runner directly: ``Runner(graph, done=plan.reuse)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from corral._errors import NotResumable, RunLocked
from corral._graph import Graph
from corral._spec import TaskState
from corral.store._interface import Store
from corral.store._records import MISSING, RunRecord, StoredRun, StoredStatus

__all__ = [
    "Graphable",
    "Resume",
    "ResumePlan",
    "plan_resume",
    "prepare_resume",
]


class Graphable(Protocol):
    """What a resume needs of a DAG: that it validates into a graph (``corral.DAG`` does).
    A protocol, so that the store does not import the Python API that imports it."""

    def validate(self, *, only: Iterable[str] | None = None) -> Graph: ...


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
    # The run's context (corral.context()) as stored: the resume starts with it.
    context: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"reuse {len(self.reuse)}, re-run {len(self.rerun)}"]
        lines += [f"  {task}: {why}" for task, why in self.rerun.items()]
        return "\n".join(lines)


def plan_resume(graph: Graph, stored: StoredRun) -> ResumePlan:
    """Decide, for each task of ``graph``, whether ``stored`` lets it be skipped."""
    from corral.store._snapshot import changed, definition_fingerprints

    reuse: dict[str, Any] = {}
    rerun: dict[str, str] = {}
    ids = graph.ids
    fingerprints = definition_fingerprints(graph.specs)
    for i in graph.order:
        task_id = ids[i]
        then = stored.tasks.get(task_id)
        if then is None:
            rerun[task_id] = "not in the earlier run"
            continue
        if then.state is not TaskState.SUCCEEDED:
            rerun[task_id] = _REASON[then.state]
            continue
        if changed(then.fingerprint, then.deps, graph.specs[i], fingerprints[i],
                   [ids[j] for j in graph.deps[i]]):
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
    instances = _instances_to_reuse(graph, stored, reuse, fingerprints)
    instances.update(_plan_tasks_to_reuse(stored, reuse))
    # Report in definition order, whatever order the decisions were made in.
    return ResumePlan(
        reuse={**{t: reuse[t] for t in ids if t in reuse}, **instances},
        rerun={t: rerun[t] for t in ids if t in rerun},
        context=dict(stored.context),
    )


def _instances_to_reuse(graph: Graph, stored: StoredRun, reuse: Mapping[str, Any],
                        fingerprints: list[str]) -> dict[str, Any]:
    """The instances ``M[k]`` of a ``for_each`` task ``M``, which succeeded then, when
    ``M`` is unchanged and everything it depends on is reused (so the list it fans out over
    is the stored one, and instance ``k`` gets the same item): the run fans ``M`` out again
    at its start and reuses them (corral._fanout); when ``M`` itself is reused, so that the
    resumed run still shows them."""
    from corral._fanout import is_instance_of
    from corral.store._snapshot import changed

    out: dict[str, Any] = {}
    ids = graph.ids
    for i, spec in enumerate(graph.specs):
        if spec.for_each is None:
            continue
        then = stored.tasks.get(spec.id)
        deps = [ids[j] for j in graph.deps[i]]
        if then is None or any(d not in reuse for d in deps) or changed(
                then.fingerprint, then.deps, spec, fingerprints[i], deps):
            continue
        for task_id, task in stored.tasks.items():
            if (task.state is TaskState.SUCCEEDED and task.value is not MISSING
                    and is_instance_of(task_id, spec.id)):
                out[task_id] = task.value
    return out


def _plan_tasks_to_reuse(stored: StoredRun, reuse: Mapping[str, Any]) -> dict[str, Any]:
    """The tasks of the stored plans of reused planners (corral._planner) that succeeded,
    with all they depend on reused too: the run rebuilds the plan at its start, without
    asking the planner again, and reuses them."""
    from corral._planner import is_plan_data

    out: dict[str, Any] = {}
    for value in list(reuse.values()):
        if not is_plan_data(value):
            continue
        planned = [t["id"] for t in value["tasks"]
                   if isinstance(t, dict) and isinstance(t.get("id"), str)]
        changed = True
        while changed:  # a plan's order need not be topological: until nothing changes
            changed = False
            for task_id in planned:
                task = stored.tasks.get(task_id)
                if (task is None or task_id in out or task.state is not TaskState.SUCCEEDED
                        or task.value is MISSING):
                    continue
                if all(d in reuse or d in out for d in task.deps):
                    out[task_id] = task.value
                    changed = True
    return out


# ---------------------------------------------------------------------------- resuming


@dataclass(frozen=True, slots=True)
class Resume:
    """A resume, decided but not started: the run it finishes, the graph to run now, and the
    plan (what is reused, what re-runs and why). Made by :func:`prepare_resume`, started by
    :func:`corral._launch.launch`; a dry run only reads it."""

    run: RunRecord
    graph: Graph
    plan: ResumePlan

    def check_unlocked(self) -> None:
        """Raise :class:`~corral._errors.RunLocked` while the run's lease is live: its process
        may still be running it. Checked before anything starts, so a refused resume writes
        nothing (the store checks again, atomically, when the new run begins)."""
        run = self.run
        if run.lease_live:
            raise RunLocked(run.id, owner=run.lease_owner, lease_until=run.lease_until)


def prepare_resume(
    store: Store,
    dag: Graphable | Callable[[RunRecord], Graphable],
    *,
    run_id: str | None = None,
    pipeline: str | None = None,
    only: Iterable[str] | None = None,
) -> Resume | None:
    """Choose the run to resume and plan it against the DAG as it is now.

    The run is ``run_id``, else the latest unfinished run of ``pipeline`` (a DAG name); with
    none, None: the caller starts a new run. ``dag`` is the DAG now, or builds it from the run
    (the CLI rebuilds the pipeline file with the run's parameters). Resumed by id, the run's
    own tasks are run again (and whatever they depend on now), as it may have been started
    with ``only``; by name, the whole DAG. ``only``, when given, wins in both cases.

    Raises :class:`~corral._errors.RunNotFound`, or :class:`~corral._errors.NotResumable` when
    the run succeeded or was already resumed. A live lease is not refused here, so that a dry
    run can show a live run's plan: :func:`corral._launch.launch` refuses it.
    """
    if (run_id is None) == (pipeline is None):
        raise TypeError("prepare_resume() takes run_id= or pipeline=, exactly one")
    if pipeline is not None:
        latest = store.latest_unfinished(pipeline)
        if latest is None:
            return None
        run_id = latest.id
    assert run_id is not None
    stored = store.load_run(run_id)
    run = stored.run
    if run.status is StoredStatus.SUCCEEDED:
        raise NotResumable(f"run {run.id} succeeded: there is nothing to resume",
                           why="succeeded")
    if run.resumed_by is not None:
        raise NotResumable(
            f"run {run.id} was already resumed by run {run.resumed_by} "
            f"(corral show {run.resumed_by})",
            why="resumed",
        )
    # A DAG (anything that validates), or what builds one from the run: told apart by
    # duck type, as the store does not import the Python API.
    now = dag if hasattr(dag, "validate") else dag(run)
    graph = _graph_to_resume(now, stored, only, by_id=pipeline is None)
    return Resume(run, graph, plan_resume(graph, stored))


def _graph_to_resume(
    dag: Graphable, stored: StoredRun, only: Iterable[str] | None, *, by_id: bool
) -> Graph:
    """``only`` when given; else, resuming by id, the run's own tasks (and whatever they
    depend on now); by name, the whole DAG."""
    only = list(only) if only is not None else None
    full = dag.validate(only=only or None)
    if only or not by_id:
        return full
    keep = [t for t in full.ids if t in stored.tasks]
    return full if len(keep) == len(full) else dag.validate(only=keep)
