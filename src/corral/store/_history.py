"""Check a stored history against the task state machine, before anyone trusts it.

A history that the scheduler could not have produced (a task that succeeded twice, ran after
succeeding, skipped an attempt number, or that is not in the run's DAG) means the store was
written by something else or damaged; resuming from it could skip work that never finished.
So :func:`check_history` raises :class:`~corral._errors.CorruptHistory` naming the run, the
task and the first offending transition, and never guesses.

The rules are the scheduler's (see :mod:`corral._scheduler`), replayed per task::

    pending ──> ready ──> running ──> succeeded | failed | skipped | cancelled
       │          │          └──> retry_wait ──> ready | cancelled
       └──────────┴──> upstream_failed | skipped | cancelled

plus one for resume: a task the run started as already succeeded (``run.reused``) goes from
pending straight to succeeded, as attempt 0, and does nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

from corral._errors import CorruptHistory
from corral._spec import TaskState
from corral.store._records import RunRecord, TransitionRecord

__all__ = ["check_history"]

S = TaskState

# What each state may be followed by. ``None`` is "no transition yet" (pending).
_NEXT: dict[TaskState | None, frozenset[TaskState]] = {
    None: frozenset({S.READY, S.UPSTREAM_FAILED, S.SKIPPED, S.CANCELLED}),
    S.PENDING: frozenset({S.READY, S.UPSTREAM_FAILED, S.SKIPPED, S.CANCELLED}),
    S.READY: frozenset({S.RUNNING, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.SKIPPED, S.CANCELLED, S.RETRY_WAIT}),
    S.RETRY_WAIT: frozenset({S.READY, S.CANCELLED}),
}


def check_history(
    run: RunRecord, transitions: Sequence[TransitionRecord], *, url: str | None = None
) -> dict[str, tuple[TaskState | None, int, str | None]]:
    """Replay ``transitions`` (in order) per task; return each task's ``(last state, attempts,
    last error)``. Raises :class:`CorruptHistory` at the first transition the rules forbid."""
    known = {t.id for t in run.tasks}
    reused = set(run.reused)
    state: dict[str, TaskState | None] = {}
    attempts: dict[str, int] = {}
    errors: dict[str, str | None] = {}

    for t in transitions:
        task = t.task_id

        def corrupt(reason: str, task: str = task, t: TransitionRecord = t) -> CorruptHistory:
            return CorruptHistory(reason, run_id=run.id, task=task, transition=t.describe(),
                                  url=url)

        if task not in known:
            raise corrupt("the task is not in the run's DAG snapshot")
        old = state.get(task)
        n = attempts.get(task, 0)
        if task in reused:
            if old is None and t.state is S.SUCCEEDED and t.attempt == 0:
                state[task] = S.SUCCEEDED
                continue
            raise corrupt(f"the run started this task as already succeeded, so it cannot go "
                          f"from {old or 'pending'} to {t.state}")
        allowed = _NEXT.get(old, frozenset())
        if t.state not in allowed:
            if old is not None and old.is_final:
                raise corrupt(f"the task was already final ({old}) and cannot become {t.state}")
            raise corrupt(f"a task cannot go from {old or 'pending'} to {t.state}")
        if t.state is S.RUNNING:
            if t.attempt != n + 1:
                raise corrupt(f"attempt {t.attempt} started after attempt {n}")
            attempts[task] = t.attempt
        elif old is S.RUNNING and t.attempt != n:
            raise corrupt(f"attempt {n} was running, but the outcome is for attempt {t.attempt}")
        state[task] = t.state
        if t.error is not None:
            errors[task] = t.error
    return {task: (s, attempts.get(task, 0), errors.get(task)) for task, s in state.items()}
