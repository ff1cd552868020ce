"""Stored runs as the API shows them: plain dicts shaped like the models in ``_models``.

A task's attempts are read off its transitions: ``running`` opens attempt *n*, the next
``succeeded``/``failed``/``retry_wait``/``skipped``/``cancelled`` closes it (an attempt closed
by ``retry_wait`` failed and is followed by another). Times are given both as wall-clock
timestamps and as seconds on the run's own clock (``start_s``/``end_s``), which is what a
timeline draws.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from corral._result import recorded_breakers
from corral._spec import ENDS_ATTEMPT, TaskState

if TYPE_CHECKING:
    from corral.store import EventRecord, RunRecord, StoredRun

__all__ = ["run_detail", "run_summary", "task_attempts"]

_ENDS_ATTEMPT = frozenset(str(state) for state in ENDS_ATTEMPT)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def run_summary(run: RunRecord, *, live_here: bool) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "pipeline": run.pipeline,
        "status": str(run.status),
        "live": live_here or (run.finished_at is None and run.lease_live),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration_s": run.duration_s,
        "n_tasks": len(run.tasks),
        "params": dict(run.params),
        "host": run.host,
        "user": run.user,
        "resumed_from": run.resumed_from,
        "resumed_by": run.resumed_by,
    }


def task_attempts(stored: StoredRun) -> dict[str, list[dict[str, Any]]]:
    """Per task id, its attempts in order."""
    out: dict[str, list[dict[str, Any]]] = {t.id: [] for t in stored.run.tasks}
    open_: dict[str, dict[str, Any]] = {}
    row: dict[str, Any] | None
    for t in stored.transitions:
        state = str(t.state)
        if state == "running":
            row = {"attempt": t.attempt, "state": "running", "start_s": t.clock, "end_s": None,
                   "started_at": _iso(t.at), "finished_at": None, "duration_s": None,
                   "error": None, "exit_code": None, "has_log": t.log_path is not None}
            out.setdefault(t.task_id, []).append(row)
            open_[t.task_id] = row
        elif state in _ENDS_ATTEMPT:
            row = open_.pop(t.task_id, None)
            if row is None:
                continue  # skipped or cancelled before it ever ran
            row.update(state="failed" if state == "retry_wait" else state, end_s=t.clock,
                       finished_at=_iso(t.at), error=t.error, exit_code=t.exit_code,
                       duration_s=t.duration_s if t.duration_s is not None
                       else t.clock - row["start_s"])
    return out


def run_counts(stored: StoredRun) -> dict[str, int]:
    """How many of the run's tasks are in each state (``pending`` for those never reached)."""
    counts: dict[str, int] = {}
    for snap in stored.run.tasks:
        state = str(stored.tasks[snap.id].state or TaskState.PENDING)
        counts[state] = counts.get(state, 0) + 1
    return counts


def finished_data(stored: StoredRun, events: Iterable[EventRecord]) -> dict[str, Any]:
    """What the live ``end`` event of a run says beyond its status, from the store: the
    counts, the realised critical path (recorded at its end; empty for a crashed run) and its
    duration."""
    run = stored.run
    duration = (run.finished_at - run.started_at).total_seconds() if run.finished_at else None
    return {"counts": run_counts(stored), "critical_path": critical_path(events),
            "duration_s": duration}


def critical_path(events: Iterable[EventRecord]) -> list[str]:
    for e in events:
        if e.kind == "run_finished":
            path = e.data.get("critical_path")
            if isinstance(path, list):
                return [str(p) for p in path]
    return []


def run_detail(stored: StoredRun, events: Iterable[EventRecord], *,
               live_here: bool) -> dict[str, Any]:
    run = stored.run
    attempts = task_attempts(stored)
    tasks = []
    for snap in run.tasks:
        task = stored.tasks[snap.id]
        state = str(task.state or TaskState.PENDING)
        mine = attempts.get(snap.id, [])
        first = mine[0] if mine else None
        last = mine[-1] if mine else None
        final = task.state is not None and task.state.is_final
        tasks.append({
            "id": snap.id,
            "deps": list(snap.deps),
            "executor": snap.executor,
            "state": state,
            "attempts": task.attempts,
            "started_at": first["started_at"] if first else None,
            "finished_at": last["finished_at"] if last and final else None,
            "duration_s": (last["end_s"] - first["start_s"])
            if first and last and final and last["end_s"] is not None else None,
            "error": task.error if state == "failed" else None,
            "reused": snap.id in run.reused,
            "history": mine,
        })
    return {
        **run_summary(run, live_here=live_here),
        "counts": run_counts(stored),
        "critical_path": critical_path(events),
        "breakers": recorded_breakers(events),
        "context": dict(stored.context),
        "reused": list(run.reused),
        "last_event_id": len(stored.transitions),
        "tasks": tasks,
    }
