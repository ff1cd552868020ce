"""``${{ ... }}``: the small expression language of pipeline files.

One syntax serves two places: a task's ``when:`` condition (``${{ params.deploy and
tasks.test.state == 'succeeded' }}``) and an argument that takes another task's value
(``args: ["${{ tasks.fetch }}"]``). An expression is parsed once, when the file is read, by
Python's own parser into a tree that is then checked against a short list of allowed forms and
evaluated by walking it here: **never** ``eval``, no calls, no attribute of anything but the
names below, no arithmetic, no comprehension, so a pipeline file cannot run code through it.

What an expression may use::

    params.NAME              a parameter's value (text)
    env.NAME                 an environment variable of the task ('' when unset)
    matrix.NAME              this task's matrix value (see matrix:)
    tasks.ID.state           'succeeded', 'failed', 'skipped', ... of a dependency
    tasks.ID.value           its return value (None for a command); tasks.ID alone is the same
    tasks.ID.value.KEY / [0] into a returned mapping or list
    'text' "text" 12 1.5 true false null
    == != < <= > >= in not in   and or not   ( )

Ids and names with dashes are written as they are (``tasks.unit-add.state``) or indexed
(``tasks['unit-add'].state``). Referring to ``tasks.ID`` makes ``ID`` a dependency.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from corral._errors import ExpressionError

__all__ = ["NAME", "NAME_RE", "Condition", "Expression", "ExpressionError", "TaskView", "parse",
           "whole"]

# A name after params., env. or matrix. (and a parameter's name in ${name}).
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
NAME_RE = re.compile(NAME)
_WHOLE = re.compile(r"\A\s*\$\{\{(?P<body>.*)\}\}\s*\Z", re.S)
_QUOTED = re.compile(r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""", re.S)
_DASHED = re.compile(r"\.([A-Za-z_][\w]*(?:-[\w]+)+)")
ROOTS = ("params", "env", "matrix", "tasks")
_CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False,
              "None": None}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: lambda a, b: bool(a == b),
    ast.NotEq: lambda a, b: bool(a != b),
    ast.Lt: lambda a, b: bool(a < b),
    ast.LtE: lambda a, b: bool(a <= b),
    ast.Gt: lambda a, b: bool(a > b),
    ast.GtE: lambda a, b: bool(a >= b),
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
MAX_LENGTH = 2000  # characters inside ${{ }}: a condition, not a program


def whole(text: Any) -> str | None:
    """The body of ``text`` if all of it is one ``${{ ... }}``, else None."""
    if not isinstance(text, str) or "${{" not in text:
        return None
    match = _WHOLE.match(text)
    return match.group("body") if match else None


@dataclass(frozen=True, slots=True)
class TaskView:
    """What an expression may read of a task: its state and value."""

    state: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class Expression:
    """A checked expression: its text, its tree, and the tasks it reads."""

    text: str
    tree: ast.expr = field(repr=False, compare=False)
    tasks: tuple[str, ...] = ()

    def task_value(self) -> str | None:
        """The id ``ID`` if this is exactly ``tasks.ID`` or ``tasks.ID.value``, else None."""
        path = _path(self.tree)
        if path and path[0] == "tasks" and (len(path) == 2 or path[2:] == ["value"]):
            return str(path[1])
        return None

    def names(self, *roots: str) -> list[tuple[str, str]]:
        """``(root, NAME)`` of each ``root.NAME`` read, for roots among ``roots``."""
        found = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Attribute | ast.Subscript):
                path = _path(node)
                if path and len(path) == 2 and path[0] in roots:
                    found.append((str(path[0]), str(path[1])))
        return found

    def evaluate(self, names: Mapping[str, Any], tasks: Callable[[str], TaskView]) -> Any:
        """The value, ``names`` giving ``params``, ``env`` and ``matrix`` (mappings) and
        ``tasks`` what each referenced task has become."""
        return _Evaluator(names, tasks).visit(self.tree)


@dataclass(frozen=True, slots=True)
class Condition:
    """A task's ``when:``: an expression with the values known when the file was read
    (``params``, ``matrix``) bound, evaluated when the task is about to start."""

    expression: Expression
    bound: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.expression.text

    def holds(self, env: Mapping[str, str], tasks: Callable[[str], TaskView]) -> bool:
        return bool(self.expression.evaluate({**self.bound, "env": env}, tasks))


def parse(body: str) -> Expression:
    """Parse the inside of ``${{ }}``; raises :class:`ExpressionError` saying what is wrong."""
    text = body.strip()
    if not text:
        raise ExpressionError("empty expression")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(_index_dashes(text), mode="eval").body
    except SyntaxError as e:
        raise ExpressionError(f"not an expression: {e.msg}") from None
    tasks: list[str] = []
    _check(tree, tasks)
    return Expression(text, tree, tuple(dict.fromkeys(tasks)))


def _index_dashes(text: str) -> str:
    """``a.b-c`` as ``a['b-c']`` outside quotes (there is no subtraction to confuse it with)."""
    parts = _QUOTED.split(text)
    for k in range(0, len(parts), 2):
        parts[k] = _DASHED.sub(lambda m: f"[{m.group(1)!r}]", parts[k])
    return "".join(parts)


def _check(node: ast.expr, tasks: list[str]) -> None:
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, tasks)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        if isinstance(node.op, ast.USub) and not _is_number(node.operand):
            raise ExpressionError("'-' only makes negative numbers: there is no arithmetic")
        _check(node.operand, tasks)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise ExpressionError(f"{type(op).__name__}: not a comparison allowed here")
        _check(node.left, tasks)
        for value in node.comparators:
            _check(value, tasks)
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, str | int | float | bool) and node.value is not None:
            raise ExpressionError(f"{node.value!r}: only text, numbers, true, false, null")
    elif isinstance(node, ast.Name):
        if node.id not in _CONSTANTS:
            raise ExpressionError(f"unknown name {node.id!r}: names start with one of "
                                  f"{', '.join(ROOTS)} (e.g. params.{node.id})"
                                  if node.id not in ROOTS else
                                  f"{node.id} needs a name after it ({node.id}.NAME)")
    elif isinstance(node, ast.Attribute | ast.Subscript):
        path = _path(node)
        if path is None or path[0] not in ROOTS:
            raise ExpressionError(f"{ast.unparse(node)!r}: only {', '.join(ROOTS)} and what "
                                  "is inside them can be read")
        if path[0] == "tasks":
            if len(path) > 2 and path[2] not in ("state", "value"):
                raise ExpressionError(f"{ast.unparse(node)!r}: a task has .state and .value")
            tasks.append(str(path[1]))
        elif len(path) != 2:
            raise ExpressionError(f"{ast.unparse(node)!r}: {path[0]}.NAME is text, with "
                                  "nothing inside it")
    elif isinstance(node, ast.List | ast.Tuple):
        for value in node.elts:
            _check(value, tasks)
    else:
        raise ExpressionError(f"{ast.unparse(node)!r} is not allowed: an expression compares "
                              "values with == != < > in, and combines them with and, or, not")


def _is_number(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, int | float) \
        and not isinstance(node.value, bool)


def _path(node: ast.expr) -> list[Any] | None:
    """``a.b['c'][0]`` as ``['a', 'b', 'c', 0]``; None if it is anything else."""
    keys: list[Any] = []
    while True:
        if isinstance(node, ast.Attribute):
            keys.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript):
            if not (isinstance(node.slice, ast.Constant)
                    and isinstance(node.slice.value, str | int)
                    and not isinstance(node.slice.value, bool)):
                return None
            keys.append(node.slice.value)
            node = node.value
        elif isinstance(node, ast.Name):
            keys.append(node.id)
            return keys[::-1]
        else:
            return None


class _Evaluator:
    def __init__(self, names: Mapping[str, Any], tasks: Callable[[str], TaskView]) -> None:
        self.names = names
        self.tasks = tasks

    def visit(self, node: ast.expr) -> Any:
        if isinstance(node, ast.BoolOp):
            result: Any = None
            for value in node.values:
                result = self.visit(value)
                if isinstance(node.op, ast.And) != bool(result):
                    return result  # short-circuit, as Python's and/or
            return result
        if isinstance(node, ast.UnaryOp):
            operand = self.visit(node.operand)
            return (not operand) if isinstance(node.op, ast.Not) else -operand
        if isinstance(node, ast.Compare):
            left = self.visit(node.left)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self.visit(right_node)
                try:
                    if not _COMPARE[type(op)](left, right):
                        return False
                except TypeError as e:
                    raise ExpressionError(f"cannot compare {left!r} and {right!r}: {e}") from None
                left = right
            return True
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return _CONSTANTS[node.id]
        if isinstance(node, ast.List | ast.Tuple):
            return [self.visit(value) for value in node.elts]
        path = _path(node)
        assert path is not None  # _check let only paths through
        return self.read(path)

    def read(self, path: list[Any]) -> Any:
        root, name, rest = path[0], path[1], path[2:]
        if root == "tasks":
            view = self.tasks(str(name))
            if rest[:1] == ["state"]:
                return view.state
            value = view.value
            for key in rest[1:] if rest[:1] == ["value"] else rest:
                try:
                    value = value[key]
                except (KeyError, IndexError, TypeError):
                    raise ExpressionError(
                        f"tasks.{name}: its value {_short(value)} has no [{key!r}]") from None
            return value
        scope = self.names.get(root) or {}
        if root == "env":
            return scope.get(name, "")
        if name not in scope:
            raise ExpressionError(f"{root}.{name} is not defined")
        return scope[name]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
