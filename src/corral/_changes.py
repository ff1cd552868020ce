"""``corral run --changed-only``: skip what is up to date, as make does, from the run store.

A task that declares ``inputs:`` (file globs) is *up to date* when, since the last time it
succeeded (in any recorded run of the pipeline, newest first), its definition and the content
of its inputs are unchanged, nothing it depends on runs again, and its ``outputs:`` (globs)
all still match a file. It is then not run: it starts as succeeded, with the value it returned
then. Every other task runs. Content, not modification times, decides: a fresh checkout (new
mtimes, same bytes) is up to date, an edit that keeps the mtime is not.

How it is decided::

    with_input_digests(dag, root)     each task with inputs: gets a digest of its files, which
                                      joins its fingerprint (store._snapshot)
    last_successes(store, pipeline)   per task, the newest recorded success (a StoredRun)
    plan_up_to_date(graph, stored)    store.plan_resume's rules (succeeded, same definition,
                                      no upstream re-runs, value stored), then: has inputs,
                                      outputs exist, and again no upstream re-runs
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from corral._spec import TaskSpec, TaskState

if TYPE_CHECKING:
    from corral._dag import DAG
    from corral._graph import Graph
    from corral.store import ResumePlan, Store, StoredRun

__all__ = ["MAX_INPUT_FILES", "digest_inputs", "last_successes", "plan_up_to_date",
           "with_input_digests"]

# Files one task's inputs may match: a glob of a whole disk is a mistake, said at once.
MAX_INPUT_FILES = 100_000
# Recorded runs looked through for each task's last success.
RUNS_LOOKED_AT = 20
_CHUNK = 1 << 20


def _base(spec: TaskSpec, root: Path) -> Path:
    """Globs are relative to the task's working directory (its ``cwd``, else ``root``)."""
    return root / spec.cwd if spec.cwd else root


def _matches(patterns: Iterable[str], base: Path) -> list[str]:
    found: set[str] = set()
    for pattern in patterns:
        for path in glob.iglob(pattern, root_dir=base, recursive=True):
            if os.path.isfile(base / path):
                found.add(path)
                if len(found) > MAX_INPUT_FILES:
                    raise ValueError(f"inputs {pattern!r} match more than "
                                     f"{MAX_INPUT_FILES:,} files")
    return sorted(found)


def digest_inputs(spec: TaskSpec, root: Path) -> str:
    """A hash of the names and contents of the files ``spec.inputs`` match (relative to the
    task's working directory): equal exactly when the same files hold the same bytes."""
    base = _base(spec, root)
    h = hashlib.blake2b(digest_size=16)
    for path in _matches(spec.inputs, base):
        h.update(path.encode() + b"\0")
        try:
            with open(base / path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
        except OSError as e:  # unreadable: never equal to a readable state
            h.update(f"\0unreadable {e.errno}".encode())
        h.update(b"\0")
    return h.hexdigest()


def with_input_digests(dag: DAG, root: Path) -> None:
    """Give each task of ``dag`` with ``inputs:`` the digest of its input files (it joins the
    task's fingerprint, so a changed input is a changed definition)."""
    for spec in dag.specs:
        if spec.inputs:
            dag.replace_spec(spec.evolve(inputs_digest=digest_inputs(spec, root)))


def outputs_missing(spec: TaskSpec, root: Path) -> str | None:
    """The first of ``spec.outputs`` that matches no file, else None."""
    base = _base(spec, root)
    for pattern in spec.outputs:
        if not any(True for _ in glob.iglob(pattern, root_dir=base, recursive=True)):
            return pattern
    return None


def last_successes(store: Store, pipeline: str) -> StoredRun | None:
    """The newest recorded run of ``pipeline``, with each task as it was when it last
    succeeded (in that run or an earlier one); None if the pipeline never ran."""
    from dataclasses import replace

    runs = store.list_runs(pipeline=pipeline, limit=RUNS_LOOKED_AT)
    if not runs:
        return None
    newest = store.load_run(runs[0].id)
    tasks = dict(newest.tasks)
    wanted = {t for t, task in tasks.items() if task.state is not TaskState.SUCCEEDED}
    for run in runs[1:]:
        if not wanted:
            break
        older = store.load_run(run.id)
        for task_id in list(wanted):
            then = older.tasks.get(task_id)
            if then is not None and then.state is TaskState.SUCCEEDED:
                tasks[task_id] = then
                wanted.discard(task_id)
    return replace(newest, tasks=tasks)


def plan_up_to_date(graph: Graph, stored: StoredRun | None, root: Path) -> ResumePlan:
    """Which tasks of ``graph`` are up to date (``reuse``: their values) and why each other
    one runs (``rerun``)."""
    from corral.store import ResumePlan, plan_resume

    ids = graph.ids
    if stored is None:
        return ResumePlan(rerun=dict.fromkeys(ids, "never ran"))
    plan = plan_resume(graph, stored)
    reuse = dict(plan.reuse)
    rerun = dict(plan.rerun)
    for i in graph.order:
        task_id = ids[i]
        if task_id not in reuse:
            continue
        spec = graph.specs[i]
        why = None
        if not spec.inputs:
            why = "declares no inputs"
        elif (missing := outputs_missing(spec, root)) is not None:
            why = f"output {missing!r} is missing"
        elif (upstream := next((ids[j] for j in graph.deps[i] if ids[j] in rerun),
                               None)) is not None:
            why = f"upstream {upstream} re-runs"
        if why is not None:
            del reuse[task_id]
            rerun[task_id] = why
    for task_id, why in rerun.items():
        if why == "definition changed" and graph.specs[graph.index[task_id]].inputs:
            rerun[task_id] = "inputs or definition changed"
    return ResumePlan(reuse={t: reuse[t] for t in ids if t in reuse},
                      rerun={t: rerun[t] for t in ids if t in rerun})
