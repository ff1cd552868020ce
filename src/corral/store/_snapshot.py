"""A DAG as a run stores it, and how resume tells whether a task's definition changed.

A run stores one :class:`~corral.store.TaskSnapshot` per task: its id, its dependencies, a
fingerprint of its definition and its executor. Every recorded run makes one per task before
its first task starts, so this is on the path of every ``corral run``.

The fingerprint (``v2:`` and 16 hex digits) covers what the task does (its action: a command,
a call, a function's code; its arguments, environment, working directory, executor,
`when:` condition and the contents of its `inputs:`) and
*not* its dependencies, which the snapshot lists beside it. Tasks that share an action and take
no arguments (the common case: 10,000 tasks of one function) share one fingerprint, computed
once, so a snapshot costs a dictionary lookup per task instead of a hash.

Runs recorded before stored :meth:`TaskSpec.fingerprint <corral._spec.TaskSpec.fingerprint>`
(16 hex digits, covering the dependencies): :func:`changed` compares each stored fingerprint in
the scheme it was made with, so such runs resume exactly as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from corral._gc import paused_gc
from corral._spec import TaskSpec, _action_key, executor_names, hash_optional_parts
from corral.store._records import TaskSnapshot

if TYPE_CHECKING:
    from corral._graph import Graph

__all__ = ["changed", "definition_fingerprints", "snapshot_of"]

# Marks the fingerprints made here; older ones (the whole TaskSpec.fingerprint) have none.
V2: Final = "v2:"


def _fingerprint(spec: TaskSpec, action_key: str) -> str:
    h = hashlib.sha256(action_key.encode())
    hash_optional_parts(h, spec)  # as TaskSpec.fingerprint does
    return V2 + h.hexdigest()[:16]


def definition_fingerprints(specs: Sequence[TaskSpec]) -> list[str]:
    """The ``v2:`` fingerprint of each of ``specs`` (see the module's note): one hash per
    distinct (action, executor, cwd) among tasks without arguments or environment."""
    shared: dict[tuple[int, str | None, str | None], str] = {}
    keys: dict[int, str] = {}  # id(action) -> its key; the specs keep the actions alive
    out = []
    for spec in specs:
        action = spec.action
        key = keys.get(id(action))
        if key is None:
            key = keys[id(action)] = _action_key(action)
        if spec.args or spec.kwargs or spec.env or spec.when is not None \
                or spec.inputs_digest is not None or spec.for_each is not None:
            out.append(_fingerprint(spec, key))
            continue
        common = (id(action), spec.executor, spec.cwd)
        fingerprint = shared.get(common)
        if fingerprint is None:
            fingerprint = shared[common] = _fingerprint(spec, key)
        out.append(fingerprint)
    return out


def snapshot_of(graph: Graph, only: Sequence[int] | None = None) -> tuple[TaskSnapshot, ...]:
    """The DAG as stored with a run: ids, dependencies, fingerprints, executors (of tasks
    ``only``, when given: those a growing run added)."""
    make = tuple.__new__  # one per task before the run starts: skip the named tuple's __new__
    out = []
    specs = graph.specs if only is None else [graph.specs[i] for i in only]
    all_deps = graph.deps if only is None else [graph.deps[i] for i in only]
    with paused_gc():  # a tuple or more per task, no cycle: nothing for a collection to find
        for spec, deps, fingerprint, executor in zip(
                specs, all_deps, definition_fingerprints(specs),
                executor_names(specs), strict=True):
            # As declared, less any repeated id: not what a growing run added (the instances
            # a for_each task gathers, a plan a planner's dependents wait for), which a resume
            # adds again and which must not read as a changed definition.
            named = spec.depends_on
            if len(named) != len(deps):
                named = tuple(dict.fromkeys(named))
            out.append(make(TaskSnapshot, (spec.id, named, fingerprint, executor)))
        return tuple(out)


def changed(then_fingerprint: str, then_deps: Sequence[str], spec: TaskSpec,
            fingerprint: str, deps: Sequence[str]) -> bool:
    """Whether task ``spec`` (whose ``v2:`` fingerprint is ``fingerprint`` and dependencies
    ``deps`` now) differs from what a run stored of it, compared in the scheme the stored
    fingerprint was made with."""
    if then_fingerprint.startswith(V2):
        return then_fingerprint != fingerprint or sorted(then_deps) != sorted(deps)
    return then_fingerprint != spec.fingerprint()  # stored before v2: deps included
