"""Planner tasks: a task that returns a :class:`Plan` grows the run by the plan's tasks.

::

    def planner(topic):
        plan = corral.Plan()
        found = plan.add("agents:search", topic, id="search")
        plan.add("agents:summarise", found, id="summarise", options={"retries": 2})
        return plan

The plan's tasks join the run as the planner's children: each depends on the planner (and on
what it names: other tasks of the plan, through their handles or ``depends_on``, or tasks
already in the run), and every task that depends on the planner waits until the whole plan
has ended. What those dependents receive as the planner's value is ``{id: value}`` of the
plan's tasks.

A plan is data, so that a run can store it and a resume can rebuild it without asking the
planner again: actions are ``"module:function"`` references (a module-level function is turned
into one) or shell commands, arguments are JSON data or handles of other tasks. The planner's
stored value is that data (:meth:`Plan.to_data`); :func:`plan_specs` turns it into specs.
A plan that does not fit the run (an id the run already has, an unknown dependency, a cycle,
an unknown option) fails the planner with :class:`~corral._errors.PlanError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from corral._errors import PlanError, ValidationError
from corral._options import make_spec
from corral._spec import CallRef, ShellCommand, TaskRef, TaskSpec, refs_in

__all__ = ["Plan", "PlanTask", "is_plan_data", "plan_specs"]

MARK = "corral.plan"  # the key that tells a stored plan from any other value
_REF = "$task"  # {"$task": ID}: another task's value, in a stored plan's arguments


class PlanTask:
    """A handle on a task of a plan: pass it as an argument of another to pass its value."""

    __slots__ = ("id",)

    def __init__(self, task_id: str) -> None:
        self.id = task_id

    def __repr__(self) -> str:
        return f"PlanTask({self.id!r})"


class Plan:
    """New tasks a planner task adds to its run (see the module's note)."""

    def __init__(self) -> None:
        self._tasks: list[dict[str, Any]] = []

    def add(self, action: Callable[..., Any] | str, /, *args: Any, id: str,
            options: Mapping[str, Any] | None = None, **kwargs: Any) -> PlanTask:
        """Add a task calling ``action`` (``"module:function"``, or a module-level function)
        with these arguments (JSON data, or :class:`PlanTask` handles); task options go in
        ``options``, as for ``dag.add``."""
        target = action if isinstance(action, str) else _reference(action)
        return self._put({"id": id, "call": target, "args": _data(list(args), id),
                          "kwargs": _data(dict(kwargs), id), "options": _options(options, id)})

    def shell(self, task_id: str, cmd: str, **options: Any) -> PlanTask:
        """Add a shell-command task."""
        return self._put({"id": task_id, "cmd": cmd, "options": _options(options, task_id)})

    def _put(self, task: dict[str, Any]) -> PlanTask:
        if not isinstance(task["id"], str) or not task["id"]:
            raise PlanError(f"a plan's task needs a non-empty id, not {task['id']!r}")
        if any(t["id"] == task["id"] for t in self._tasks):
            raise PlanError(f"the plan has two tasks of id {task['id']!r}")
        self._tasks.append(task)
        return PlanTask(task["id"])

    @property
    def ids(self) -> list[str]:
        return [t["id"] for t in self._tasks]

    def to_data(self) -> dict[str, Any]:
        """The plan as JSON data: what the run stores as the planner's value."""
        return {MARK: 1, "tasks": json.loads(json.dumps(self._tasks))}


def is_plan_data(value: Any) -> bool:
    return isinstance(value, dict) and value.get(MARK) == 1 and isinstance(
        value.get("tasks"), list)


def plan_specs(planner: str, data: Mapping[str, Any]) -> list[TaskSpec]:
    """The specs of a stored plan (:meth:`Plan.to_data`) made by task ``planner``: each
    depends on the planner and on the tasks it names. Raises :class:`PlanError`."""
    specs = []
    for task in data["tasks"]:
        task_id = task["id"]
        action: Any = (ShellCommand(task["cmd"]) if "cmd" in task else CallRef(task["call"]))
        args = tuple(_refs(a) for a in task.get("args", ()))
        kwargs = {k: _refs(v) for k, v in task.get("kwargs", {}).items()}
        options = dict(task.get("options") or {})
        if "for_each" in options:
            raise PlanError(f"the plan of task {planner!r}: task {task_id!r} has for_each, "
                            "which plans do not support yet (plan one task per item instead)")
        depends = options.pop("depends_on", ())
        depends = [depends] if isinstance(depends, str) else list(depends)
        for ref in refs_in((args, kwargs)):
            if ref not in depends:
                depends.append(ref)
        if planner not in depends:
            depends.append(planner)
        try:
            specs.append(make_spec(task_id, action, args=args, kwargs=kwargs,
                                   options={**options, "depends_on": depends}))
        except ValidationError as exc:
            raise PlanError(f"the plan of task {planner!r}: {exc}") from None
    return specs


def _reference(fn: Callable[..., Any]) -> str:
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or not name or "<" in name:
        raise PlanError(f"a plan's task must call a module-level function or "
                        f"'module:function', not {fn!r}: the plan is stored, so that a resume "
                        "can rebuild it without asking the planner again")
    return f"{module}:{name}"


def _data(value: Any, task_id: str) -> Any:
    """``value`` with handles as ``{"$task": ID}``, checked to be JSON data."""
    def encode(v: Any) -> Any:
        if isinstance(v, PlanTask):
            return {_REF: v.id}
        if isinstance(v, list | tuple):
            return [encode(x) for x in v]
        if isinstance(v, dict):
            return {k: encode(x) for k, x in v.items()}
        return v

    encoded = encode(value)
    try:
        json.dumps(encoded, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PlanError(f"the arguments of plan task {task_id!r} must be JSON data or "
                        f"PlanTask handles: {exc}") from None
    return encoded


def _options(options: Mapping[str, Any] | None, task_id: str) -> dict[str, Any]:
    out = dict(options or {})
    depends = out.get("depends_on")
    if depends is not None:
        items = [depends] if isinstance(depends, str | PlanTask) else list(depends)
        out["depends_on"] = [d.id if isinstance(d, PlanTask) else d for d in items]
    return dict(_data(out, task_id))


def _refs(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_REF}:
            return TaskRef(value[_REF])
        return {k: _refs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_refs(v) for v in value]
    return value
