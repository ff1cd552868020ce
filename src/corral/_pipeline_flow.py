"""What ``matrix:`` and ``${{ ... }}`` do in a pipeline file, as the reader meets them.

A task with ``matrix:`` becomes one task per combination of its values, named ``ID[k=v,...]``,
each reading its values as ``${matrix.k}``; a dependency on the matrix task is one on each of
them. An argument written ``${{ tasks.ID }}`` takes task ID's value (and makes ID a
dependency); a ``when:`` is parsed and checked now, with the parameters and matrix values
bound, and evaluated when the task could start (:mod:`corral._expressions`). Problems carry
the file's line, as every other problem of the file does.
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from corral._expressions import NAME_RE, Condition, ExpressionError, TaskView, parse, whole
from corral._pipeline_text import _line_of
from corral._spec import ShellCommand, TaskRef, TaskSpec
from corral._words import Suggester, short_repr, suggest

__all__ = ["MAX_MATRIX", "FlowReading", "matrix_combinations"]

MAX_MATRIX = 10_000  # tasks one matrix may make


def matrix_combinations(matrix: Any) -> list[dict[str, Any]] | None:
    """Every combination of a well-formed ``matrix:`` (a mapping of names to non-empty lists
    of scalars), first key slowest; None for anything else, left to the shape check."""
    if not isinstance(matrix, dict) or not matrix:
        return None
    for key, values in matrix.items():
        if not (isinstance(key, str) and NAME_RE.fullmatch(key) and isinstance(values, list)
                and values and all(isinstance(v, str | int | float | bool) for v in values)):
            return None
    combos: list[dict[str, Any]] = [{}]
    for key, values in matrix.items():
        combos = [{**c, key: v} for c in combos for v in values]
        if len(combos) > MAX_MATRIX:
            break
    return combos


class FlowReading:
    """The reader's part for matrices and expressions (mixed into ``_pipeline._Reader``)."""

    file: str
    params: dict[str, str | None]
    matrix: dict[str, Any] | None  # of the matrix task being read
    expansions: dict[str, list[str]]  # matrix task id -> its tasks' ids
    task_refs: list[tuple[str, str, int | None]]  # (task, the task it reads, line)

    if TYPE_CHECKING:
        def problem(self, message: str, line: int | None, *, task: str | None = None,
                    hint: str | None = None) -> None: ...

        def task(self, task_id: str, body: Any, line: int | None, defaults: dict[str, Any],
                 *, listed: bool = False) -> TaskSpec: ...

    def expand(self, task_id: str, body: Any, line: int | None, defaults: dict[str, Any], *,
               listed: bool = False) -> list[TaskSpec]:
        """The task, or with ``matrix:`` one task per combination of its values, each named
        ``ID[k=v,...]`` and reading its values as ``${matrix.k}``."""
        combos = matrix_combinations(body.get("matrix") if isinstance(body, dict) else None)
        if combos is None:  # no matrix, or a malformed one: the shape check reports it once
            return [self.task(task_id, body, line, defaults, listed=listed)]
        if len(combos) > MAX_MATRIX:
            self.problem(f"task {task_id!r}: matrix makes {len(combos):,} tasks, more than "
                         f"{MAX_MATRIX:,}", _line_of(body, ("matrix",)), task=task_id)
            return [_placeholder(task_id, (self.file, line))]
        specs = []
        for combo in combos:
            self.matrix = combo
            name = f"{task_id}[{','.join(f'{k}={_text(v)}' for k, v in combo.items())}]"
            specs.append(self.task(name, body, line, defaults, listed=listed))
        self.matrix = None
        self.expansions[task_id] = [spec.id for spec in specs]
        return specs

    def task_values(self, value: Any, root: Any, loc: tuple[Any, ...], task: str) -> Any:
        """``value`` with each argument written ``${{ tasks.ID }}`` made a reference to that
        task's value (and ``ID`` a dependency); other ``${{ }}`` evaluated now, from params
        and the matrix."""
        body = whole(value)
        if body is not None:
            line = _line_of(root, loc)
            try:
                expression = parse(body)
                ref = expression.task_value()
                if ref is not None:
                    self.task_refs.append((task, ref, line))
                    return TaskRef(ref)
                if expression.tasks:
                    raise ExpressionError("an argument takes a task's value whole, "
                                          f"${{{{ tasks.{expression.tasks[0]} }}}}")
                return expression.evaluate(self.bound(), _no_tasks)
            except ExpressionError as e:
                self.problem(f"task {task!r}: {short_repr(value)}: {e}", line, task=task)
                return value
        if isinstance(value, dict):
            return {k: self.task_values(v, root, (*loc, k), task) for k, v in value.items()}
        if isinstance(value, list):
            return [self.task_values(v, root, (*loc, i), task) for i, v in enumerate(value)]
        return value

    def bound(self) -> dict[str, dict[str, Any]]:
        """What an expression can read when the file is read: params and the matrix."""
        params = {k: v for k, v in self.params.items() if v is not None}
        return {"params": params, "matrix": dict(self.matrix or {})}

    def condition(self, text: str, root: Any, task: str) -> Condition | None:
        """A task's ``when:``, checked now (syntax, parameter and matrix names)."""
        line = _line_of(root, ("when",))
        try:
            expression = parse(whole(text) or text)
            bound = self.bound()
            for name in expression.names("params", "matrix"):
                scope, key = name
                if key not in bound[scope]:
                    known = sorted(bound[scope])
                    close = suggest(key, known)
                    raise ExpressionError(f"{scope}.{key} is not defined" + (
                        f" (did you mean {scope}.{close}?)" if close else ""))
        except ExpressionError as e:
            self.problem(f"task {task!r}: when: {e}", line, task=task)
            return None
        for ref in expression.tasks:
            self.task_refs.append((task, ref, line))
        return Condition(expression, bound)

    def resolve_refs(self, specs: list[TaskSpec]) -> list[TaskSpec]:
        """After every task is read: ``${{ tasks.ID }}`` to a task that does not exist is a
        problem (with did-you-mean), and a dependency on a matrix task is one on each of its
        tasks (an argument taking its value gets the list of their values)."""
        if not self.task_refs and not self.expansions:
            return specs
        ids = {spec.id for spec in specs} | set(self.expansions)
        suggester: Suggester | None = None
        unknown: set[tuple[str, str]] = set()
        for task, ref, line in self.task_refs:
            if ref not in ids:
                suggester = suggester or Suggester(sorted(ids))
                self.problem(f"task {task!r}: tasks.{ref}: there is no task {ref!r}", line,
                             task=task, hint=suggester.hint(ref))
                unknown.add((task, ref))
        if not self.expansions and not unknown:
            return specs
        expand = self.expansions

        def refs(value: Any) -> Any:
            if isinstance(value, TaskRef):
                return [TaskRef(t) for t in expand[value.id]] if value.id in expand else value
            if isinstance(value, dict):
                return {k: refs(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return type(value)(refs(v) for v in value)
            return value

        out = []
        for spec in specs:
            if unknown:  # reported above, not again as an unknown dependency
                spec = replace(spec, depends_on=tuple(d for d in spec.depends_on
                                                      if (spec.id, d) not in unknown))
            if any(d in expand for d in spec.depends_on):
                deps = [e for d in spec.depends_on for e in expand.get(d, [d])]
                spec = replace(spec, depends_on=tuple(dict.fromkeys(deps)),
                               args=refs(spec.args), kwargs=refs(spec.kwargs))
            out.append(spec)
        return out

    def matrix_value(self, name: str, written: str, root: Any, loc: tuple[Any, ...],
                     task: str | None, quote: bool) -> str:
        """``${matrix.NAME}``: this task's value of NAME (shell-quoted in a command)."""
        key = name.partition(".")[2]
        if self.matrix is None or key not in self.matrix:
            known = sorted(self.matrix or ())
            close = suggest(key, known) if known else None
            self.problem(f"task {task!r}: ${{{name}}}: " + (
                f"the matrix has no {key!r}" if self.matrix is not None else
                "this task has no matrix:"), _line_of(root, loc), task=task,
                hint=f"did you mean matrix.{close}?" if close else None)
            return written
        value = _text(self.matrix[key])
        return shlex.quote(value) if quote else value


def _text(value: Any) -> str:
    """A matrix value as text, as the file wrote it (``true``, not ``True``)."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _no_tasks(task_id: str) -> TaskView:
    raise ExpressionError(f"tasks.{task_id} is not known when the file is read")


def _placeholder(task_id: str, source: tuple[str, int | None]) -> TaskSpec:
    """Stands for a task with problems, so that its dependents' references still resolve."""
    return TaskSpec(id=task_id, action=ShellCommand(""), source=source)
