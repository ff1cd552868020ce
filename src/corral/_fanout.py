"""Fan-out over a result: a task with ``for_each: UPSTREAM`` runs once per item of the list
UPSTREAM returns.

The mapped task ``M`` stays in the graph as the *gather*: when UPSTREAM succeeds, the run
grows by one instance per item, ``M[0]``, ``M[1]``, ... (copies of ``M``'s definition, the
item put first among the arguments, or for a command in ``$CORRAL_ITEM``, the same
dependencies), and ``M`` waits for all of them;
it then "runs" without an executor, and its value is the list of the instances' values in
order. So what depends on ``M`` (``${{ tasks.M }}``, a ``Task`` handle) receives that list,
and nothing downstream needs rewiring. The gather holds none of ``M``'s rate limits,
breaker, resources, timers or retries: those are the instances'.

Pure functions of specs; :mod:`corral._runner` grows the run with them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from corral._errors import ForEachError
from corral._spec import RetryPolicy, ShellCommand, TaskSpec
from corral._words import short_repr

__all__ = ["ITEM_VAR", "gather_spec", "instance_id", "instances",
           "is_instance_of"]

# A command (cmd:) instance finds its item in this environment variable.
ITEM_VAR = "CORRAL_ITEM"


def instance_id(task_id: str, k: int) -> str:
    return f"{task_id}[{k}]"


def is_instance_of(candidate: str, task_id: str) -> bool:
    """Whether ``candidate`` names an instance of ``task_id`` (``task_id[k]``)."""
    head, bracket, rest = candidate.rpartition("[")
    return head == task_id and bracket == "[" and rest.endswith("]") and rest[:-1].isdigit()


def gather_spec(spec: TaskSpec) -> TaskSpec:
    """What the mapped task itself is in the running graph: its definition (so its stored
    fingerprint does not change) less what only its instances hold while they run."""
    return spec.evolve(rate_limit=(), breaker=None, resources={}, timeout=None, heartbeat=None,
                       retry=RetryPolicy())


def instances(spec: TaskSpec, value: Any) -> list[TaskSpec] | ForEachError:
    """One spec per item of ``value`` (what ``spec.for_each`` returned), or the error that
    fails ``spec`` when ``value`` is not a list (a tuple is taken as one)."""
    if not isinstance(value, list | tuple):
        return ForEachError(
            f"task {spec.id!r} has for_each: {spec.for_each}, but {spec.for_each!r} returned "
            f"{type(value).__name__} {short_repr(value)}, not a list")
    if isinstance(spec.action, ShellCommand):  # a command takes its item from the env
        return [spec.evolve(id=instance_id(spec.id, k), for_each=None,
                            env={**spec.env, ITEM_VAR: _as_text(item)})
                for k, item in enumerate(value)]
    return [spec.evolve(id=instance_id(spec.id, k), args=(item, *spec.args), for_each=None)
            for k, item in enumerate(value)]


def _as_text(item: Any) -> str:
    """An item as a command's environment carries it: text as is, anything else as JSON."""
    return item if isinstance(item, str) else json.dumps(item, default=str)


def not_expanded(spec: TaskSpec, upstream_state: str) -> ForEachError:
    """The error of a mapped task that came to run although its upstream did not succeed
    (``trigger_rule: all_done``): there is nothing to fan out over."""
    return ForEachError(f"task {spec.id!r} has for_each: {spec.for_each}, but "
                        f"{spec.for_each!r} ended {upstream_state}: there is no list to fan "
                        "out over")


def mapped(specs: Sequence[TaskSpec]) -> dict[int, TaskSpec]:
    """The tasks with ``for_each``, by index."""
    return {i: s for i, s in enumerate(specs) if s.for_each is not None}
