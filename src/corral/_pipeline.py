"""Pipeline files: a DAG written in YAML or JSON instead of Python.

This module owns the file format and nothing downstream of it. It reads text into plain data
that remembers where each key was written, checks the shape of that data with pydantic models,
substitutes ``${name}`` parameters, turns each task into a :class:`TaskSpec` with
:func:`corral._options.make_spec` (the one place options are spelled) and hands the specs to
:func:`corral._graph.build_graph`. A :class:`Pipeline` is returned only when all of that passed.

::

    text --load_text----> dicts and lists               (_pipeline_text.py; JSON without lines)
         --pydantic-----> Header, one Task per task   (shape errors -> Problem at the key's line)
         --_Reader.sub--> ${name} substituted           (shell-quoted in cmd, raw elsewhere)
         --make_spec----> TaskSpec(source=(file, line)) (one per task)
         --build_graph--> Graph                         (value, dependency and cycle errors)

Policy:

- Every problem found is reported at once, in file order, as a :class:`Problem` carrying the
  file and line. pydantic's errors are translated, never shown raw, and a value quoted in a
  message is cut short (:func:`corral._words.short_repr`).
- Lines are found when there is something to report: a JSON file is read fast, without them,
  and read again with them only when it has problems (then everything is checked again, on
  data that knows its lines). YAML always has them.
- Numbers must be finite wherever corral reads them (NaN and infinities are refused); inside
  ``args`` and ``kwargs``, values are the user's and arrive as written.
- Parameters are strings. In ``cmd`` a value is inserted with :func:`shlex.quote`, so it is one
  shell word whatever it contains; in ``env``, ``cwd``, ``args`` and ``kwargs`` it is inserted
  as is. ``$${name}`` stands for a literal ``${name}``.
- Without a ``params:`` section, a ``${name}`` nobody passed is left alone (it may be a shell
  variable), and a passed parameter that the file never uses is an error. With one, the section
  declares every name: using or passing another one is an error. A parameter declared with no
  value (``target: ~``) must be passed.
- ``call:`` targets are checked when the pipeline is read (``check_calls``): imported, so
  that a missing module or function is a problem with file and line like any other (the
  module's top-level code runs), or only found without running anything, or not checked.
  Their import path — ``python_path:`` entries, relative to the file, then the file's own
  directory — travels with each :class:`CallRef` (see :mod:`corral._imports`).
- Top-level keys starting with ``x-`` are ignored: a place for YAML anchors to be merged
  into tasks with ``<<``, as in Compose files.
- The set of task options comes from :data:`corral._options.TASK_OPTIONS`; how their values
  are written in a file is :mod:`corral._pipeline_schema`'s (an option it does not know the
  type of is accepted as any value and checked by ``build_graph``).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pydantic

from corral._dag import DAG
from corral._errors import ParameterError, PipelineError, Problem, ValidationError
from corral._expressions import NAME, NAME_RE
from corral._gc import paused_gc
from corral._options import TASK_OPTIONS, make_spec
from corral._pipeline_flow import FlowReading
from corral._pipeline_schema import TASK, FileHeader, Header, Task, known_keys, pipeline_schema
from corral._pipeline_text import (
    MAX_DEPTH,
    Loaded,
    _Duplicate,
    _line_of,
    _Sequence,
    load_text,
    read_file,
)
from corral._spec import CallRef, ShellCommand, TaskSpec
from corral._words import Suggester, short_repr, suggest

__all__ = ["Pipeline", "load_pipeline", "parse_params", "parse_pipeline", "pipeline_schema"]

FORMATS = ("yaml", "json")
# How call: targets are checked: imported, found without running their code, or not at all.
CHECK_CALLS = ("import", "find", "off")

# A reference to a parameter or a matrix value: ``${name}``, ``${matrix.name}``; ``$${...}`` is
# the literal text.
_REF_RE = re.compile(rf"\$\$\{{(?P<escaped>(?:matrix\.)?{NAME})\}}"
                     rf"|\$\{{(?P<name>(?:matrix\.)?{NAME})\}}")


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A pipeline file, read and validated: its DAG and what the file said around it."""

    name: str
    dag: DAG
    concurrency: int | None  # the file's ``concurrency``; None when it does not say
    path: str | None
    params: dict[str, str]  # effective parameters: the file's defaults, then the overrides
    # Where call: modules are looked for, after sys.path: python_path: entries, then the
    # file's directory (absolute).
    python_path: tuple[str, ...] = ()


# --------------------------------------------------------------------------- public functions
def load_pipeline(
    path: str | Path,
    *,
    params: Mapping[str, str] | None = None,
    check_calls: str = "import",
) -> Pipeline:
    """Read and validate a pipeline file (``.yaml``, ``.yml`` or ``.json``).

    ``call:`` modules are looked for after ``sys.path`` in the file's ``python_path:`` entries
    and in its directory. ``check_calls`` says how their targets are checked: ``"import"``
    (the modules are imported: their top-level code runs), ``"find"`` (found without running
    any code; functions looked for in the source) or ``"off"``.

    Raises :class:`PipelineError` listing every problem, each with its file and line, and
    :class:`ParameterError` for a parameter the file does not declare or one it requires.
    """
    file = Path(path)
    text = read_file(file)
    fmt = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}.get(file.suffix.lower())
    return parse_pipeline(text, file=str(file), fmt=fmt, params=params,
                          base_dir=file.absolute().parent, check_calls=check_calls)


def parse_pipeline(
    text: str,
    *,
    file: str = "<string>",
    fmt: str | None = None,
    params: Mapping[str, str] | None = None,
    base_dir: str | Path | None = None,
    check_calls: str = "import",
) -> Pipeline:
    """Validate a pipeline given as text; ``fmt`` is ``"yaml"``, ``"json"`` or None (guess).

    ``file`` names the source in problems and gives the default pipeline name; unless it is
    a ``<placeholder>``, it is also the pipeline's ``path``. ``base_dir`` is the directory
    the text belongs in: relative ``python_path:`` entries are relative to it, and it is
    searched for ``call:`` modules after them. Text with no ``base_dir`` (submitted to
    ``corral serve``) has no directory: its modules must be on ``sys.path``, and a relative
    ``python_path:`` entry is a problem. ``check_calls`` is as for :func:`load_pipeline`.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)} or None, not {fmt!r}")
    if check_calls not in CHECK_CALLS:
        raise ValueError(f"check_calls must be one of {', '.join(CHECK_CALLS)}, "
                         f"not {check_calls!r}")
    path = None if file.startswith("<") else file
    base = None if base_dir is None else str(Path(base_dir).absolute())
    passed = dict(params or {})
    # No cyclic collection while a file is read: reading allocates millions of objects and
    # no cycles (100,000 tasks read in several times the time with the collector on).
    with paused_gc():
        loaded = load_text(text, file, fmt)
        try:
            return _Reader(file, passed, base, check_calls).read(loaded, path)
        except PipelineError:
            if loaded.located:
                raise
        # Problems, but no lines to show them at: read the file again, with lines.
        located = load_text(text, file, fmt, located=True)
        return _Reader(file, passed, base, check_calls).read(located, path)


def parse_params(pairs: Iterable[str]) -> dict[str, str]:
    """``["key=value", ...]`` as a dict; the value may contain ``=``; the last key wins."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ParameterError(f"parameter {pair!r} is not of the form key=value")
        if not NAME_RE.fullmatch(key):
            raise ParameterError(
                f"parameter name {key!r} in {pair!r} is not valid: use letters, digits and _, "
                "not starting with a digit"
            )
        out[key] = value
    return out


# --------------------------------------------------------------------------- building
class _Reader(FlowReading):
    """Turns loaded data into a :class:`Pipeline`, collecting every problem on the way."""

    def __init__(
        self, file: str, passed: dict[str, str], base_dir: str | None = None,
        check_calls: str = "import",
    ) -> None:
        self.file = file
        self.passed = passed
        self.base_dir = base_dir
        self.check_calls = check_calls
        self.import_path: tuple[str, ...] = (base_dir,) if base_dir else ()
        self.calls: list[tuple[str, str, str | None, int | None]] = []  # for check_calls
        self.problems: list[Problem] = []
        self.params: dict[str, str | None] = dict(passed)
        self.declared: dict[str, str | None] | None = None  # None: the file has no params:
        self.suggest_param: Suggester | None = None  # "did you mean" among the declared
        self.suggest_key: dict[tuple[str, ...], Suggester] = {}  # ... among a model's keys
        self.used: set[str] = set()
        # One ShellCommand per command line, one CallRef per target: shared by the tasks.
        self.commands: dict[str, ShellCommand] = {}
        self.refs: dict[str, CallRef] = {}
        self.matrix: dict[str, Any] | None = None  # of the matrix task being read
        self.expansions: dict[str, list[str]] = {}  # matrix task id -> its tasks' ids
        self.task_refs: list[tuple[str, str, int | None]] = []  # (task, ${{ tasks.ID }}, line)

    def problem(
        self, message: str, line: int | None, *, task: str | None = None, hint: str | None = None
    ) -> None:
        self.problems.append(Problem(message, task=task, file=self.file, line=line, hint=hint))

    def read(self, loaded: Loaded, path: str | None) -> Pipeline:
        data, duplicates = loaded.data, loaded.duplicates
        if data is None:
            raise PipelineError([Problem("the file is empty", file=self.file, line=1,
                                         hint="a pipeline needs at least a tasks: section")])
        if not isinstance(data, dict):
            raise PipelineError([Problem(
                f"the top level must be a mapping with a tasks: key, not {_kind(data)}",
                file=self.file, line=getattr(data, "line", None) or 1,
            )])
        tasks = data.get("tasks")
        owner = _owners(tasks) if duplicates else {}
        # A task id written twice is left to build_graph, as in a list of tasks: the task it
        # shadowed is checked too (shadowed). Any other key written twice is reported here.
        shadowed = [d for d in duplicates if d.mapping is tasks]
        for key, value in data.items():
            if _is_extension(key) and _too_deep(value, MAX_DEPTH - 1):
                self.problem(f"{short_repr(key)}: values nested more than {MAX_DEPTH} levels deep",
                             _line_of(data, (key,)))
        for dup in duplicates:
            if dup.mapping is not tasks:
                task = owner.get(id(dup.mapping))
                self.problem(f"task {task!r}: duplicate key {short_repr(dup.key)}" if task else
                             f"duplicate key {short_repr(dup.key)}", dup.line, task=task,
                             hint=f"first written on line {dup.first}" if dup.first else None)

        header_data = {k: v for k, v in data.items() if k != "tasks" and not _is_extension(k)}
        header = self.validate(FileHeader.model_validate, FileHeader, header_data, data, "",
                               extra=("tasks",),
                               vital=("resources", "rate_limits", "circuit_breakers"))
        if header is None:  # without the capacity, tasks are checked for shape only
            self.tasks(tasks, data, {}, shadowed)
            for dup in shadowed:
                self.problem(f"duplicate task id {short_repr(dup.key)}", dup.line,
                             task=str(dup.key),
                             hint=f"first defined on line {dup.first}" if dup.first else None)
            raise self.error()
        self.use_params(header, data)
        self.import_path = self.python_path(header, data)
        defaults = self.options(getattr(header, "defaults", None), data, ("defaults",), None)
        env = {k: self.sub(v, data, ("env", k), None) for k, v in header.env.items()}
        specs = self.resolve_refs(self.tasks(tasks, data, defaults, shadowed))

        name = header.name or (Path(path).stem if path else "pipeline")
        dag = DAG(name, concurrency=header.concurrency, resources=header.resources,
                  defaults=defaults, env=env,
                  rate_limits={k: v if isinstance(v, str) else v.model_dump()
                               for k, v in header.rate_limits.items()},
                  circuit_breakers={k: v.model_dump()
                                    for k, v in header.circuit_breakers.items()},
                  queues={k: v.model_dump() for k, v in header.queues.items()})
        for spec in specs:
            dag.add_spec(spec)
        try:
            dag.validate()
        except ValidationError as e:
            self.problems.extend(p if p.file else replace(p, file=self.file) for p in e.problems)
        if self.calls and self.check_calls != "off":
            from corral._imports import check_calls

            self.problems.extend(check_calls(self.calls, self.import_path,
                                             execute=self.check_calls == "import"))
        if self.problems:
            raise self.error()
        self.check_passed()
        effective = {k: v for k, v in self.params.items() if v is not None}
        return Pipeline(name=name, dag=dag, concurrency=header.concurrency, path=path,
                        params=effective, python_path=self.import_path)

    def python_path(self, header: Header, top: Any) -> tuple[str, ...]:
        """The directories searched for ``call:`` modules after ``sys.path``: each
        ``python_path:`` entry (parameters substituted, ``~`` expanded, relative to the file),
        then the file's directory."""
        dirs: list[str] = []
        for i, entry in enumerate(header.python_path or ()):
            line = _line_of(top, ("python_path", i))
            text = os.path.expanduser(self.sub(entry, top, ("python_path", i), None))
            if not os.path.isabs(text):
                if self.base_dir is None:
                    self.problem(f"python_path entry {entry!r} is relative, and this pipeline "
                                 "has no file to be relative to", line,
                                 hint="use an absolute directory (a pipeline sent as text, "
                                 "e.g. to corral serve, has no directory of its own)")
                    continue
                text = os.path.join(self.base_dir, text)
            text = os.path.normpath(text)
            if not os.path.isdir(text):
                self.problem(f"python_path entry {entry!r} is not a directory: {text}", line,
                             hint="entries are relative to the pipeline file's directory")
                continue
            if text not in dirs:
                dirs.append(text)
        if self.base_dir and self.base_dir not in dirs:
            dirs.append(self.base_dir)
        return tuple(dirs)

    def error(self) -> PipelineError:
        """Every problem found, in file order."""
        return PipelineError(sorted(self.problems, key=lambda p: p.line or 0))

    # ---------------------------------------------------------------- shape
    def validate(
        self,
        check: Any,
        schema: Any,
        data: Mapping[str, Any],
        root: Any,
        where: str,
        *,
        extra: tuple[str, ...] = (),
        task: str | None = None,
        vital: tuple[str, ...] = (),
    ) -> Any:
        """``data`` (a view of ``root``) validated by ``check`` against ``schema`` (a model or
        a TypedDict), reporting every problem.

        After problems, the result without the keys in error, so that the rest can still be
        checked; or None if one of the ``vital`` keys was in error (what is left would only
        lead to more, misleading problems).
        """
        try:
            return check(data)
        except pydantic.ValidationError as e:
            failed = set()
            for error in e.errors():
                self.pydantic_problem(error, schema=schema, root=root, where=where, extra=extra,
                                      task=task)
                failed.add(error["loc"][0] if error["loc"] else None)
        if None in failed or failed.intersection(vital):
            return None
        try:
            return check({k: v for k, v in data.items() if k not in failed})
        except pydantic.ValidationError:  # pragma: no cover - a model with required keys
            return None

    def pydantic_problem(
        self,
        error: Any,
        *,
        schema: Any,
        root: Any,
        where: str,
        extra: tuple[str, ...],
        task: str | None,
    ) -> None:
        loc = tuple(error["loc"])
        line = _line_of(root, loc)
        path = _dotted(_strip_tags(root, loc))
        kind = error["type"]
        if kind == "invalid_key":
            self.problem(f"{where}key {short_repr(loc[-1])} must be a string", line, task=task,
                         hint=f"quote it: '{short_repr(loc[-1], quote=False)}'")
        elif kind == "extra_forbidden":
            key = loc[-1]
            known = [*known_keys(schema, loc[:-1]), *(extra if len(loc) == 1 else ())]
            suggester = self.suggest_key.get(tuple(known))
            if suggester is None:  # one per set of keys, so that answers and budget are shared
                suggester = self.suggest_key[tuple(known)] = Suggester(known)
            hint = suggester.hint(str(key))
            if key == "id" and len(loc) == 1 and task is not None:
                hint = "in a mapping of tasks the key is the id"
            self.problem(f"{where}unknown key {short_repr(path)}", line, task=task, hint=hint)
        elif kind == "missing":
            self.problem(f"{where}missing key {short_repr(path)}", line, task=task)
        else:
            value = error["input"]
            if kind == "float_type" and isinstance(value, int) and not isinstance(value, bool):
                kind = "finite_number"  # an integer too large for a float
            what = _EXPECTED.get(kind)
            if what is None:
                what = str(error["msg"])
                what = what[:1].lower() + what[1:]
            else:
                what = what.format(**{k: _number(v) for k, v in error.get("ctx", {}).items()})
            hint = None
            if kind == "literal_error" and isinstance(value, str):  # one of a few words
                choices = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected")))
                close = suggest(value, choices)
                hint = f"did you mean {close!r}?" if close else None
            self.problem(f"{where}{short_repr(path, quote=False) if path else 'value'} {what}, "
                         f"not {short_repr(value)}", line, task=task, hint=hint)

    # ---------------------------------------------------------------- tasks
    def tasks(
        self, raw: Any, top: Any, defaults: dict[str, Any], shadowed: list[_Duplicate]
    ) -> list[TaskSpec]:
        """A spec (or placeholder) per task, in file order, shadowed ones included."""
        line = _line_of(top, ("tasks",))
        if "tasks" not in top:
            self.problem("there is no tasks: section", line or 1,
                         hint="add tasks: {name: {cmd: ...}}")
            return []
        if raw is None or (isinstance(raw, dict | list) and not raw):
            self.problem("tasks: is empty", line, hint="a pipeline needs at least one task")
            return []
        specs: list[TaskSpec] = []
        if isinstance(raw, dict):
            lines = getattr(raw, "lines", {})
            entries: Iterable[tuple[Any, Any, int | None]] = (
                (key, body, lines.get(key)) for key, body in raw.items())
            if shadowed:  # in file order, among the others
                entries = sorted([*entries, *((d.key, d.shadowed, d.shadowed_line)
                                              for d in shadowed)], key=lambda e: e[2] or 0)
            for key, body, key_line in entries:
                if not isinstance(key, str) or not key:
                    self.problem(f"task id {short_repr(key)} must be a non-empty string",
                                 key_line, hint=f"quote it: '{short_repr(key, quote=False)}'")
                    continue
                if isinstance(body, dict) and "matrix" in body:
                    specs.extend(self.expand(key, body, key_line, defaults))
                else:
                    specs.append(self.task(key, body, key_line, defaults))
        elif isinstance(raw, list):
            for i, body in enumerate(raw):
                item_line = raw.lines[i] if isinstance(raw, _Sequence) else None
                if not isinstance(body, dict):
                    self.problem(f"task #{i + 1} must be a mapping with an id, "
                                 f"not {_kind(body)}", item_line)
                    continue
                task_id = body.get("id")
                if not isinstance(task_id, str) or not task_id:
                    self.problem(f"task #{i + 1} needs an id (a non-empty string)",
                                 _line_of(body, ("id",)) or item_line)
                    continue
                if "matrix" in body:
                    specs.extend(self.expand(task_id, body, item_line, defaults, listed=True))
                else:
                    specs.append(self.task(task_id, body, item_line, defaults, listed=True))
        else:
            self.problem(f"tasks must be a mapping of ids to tasks, or a list of tasks, "
                         f"not {_kind(raw)}", line)
        return specs

    def task(
        self,
        task_id: str,
        body: Any,
        line: int | None,
        defaults: dict[str, Any],
        *,
        listed: bool = False,
    ) -> TaskSpec:
        """The spec of one task (``listed``: an item of a list, with its own ``id``).

        After problems, a placeholder: its dependents' references to it still resolve.
        """
        source = (self.file, line)
        if body is None:
            self.problem(f"task {task_id!r} is empty", line, task=task_id,
                         hint="give it a cmd or a call")
            return _placeholder(task_id, source)
        if not isinstance(body, dict):
            self.problem(f"task {task_id!r} must be a mapping of keys, not {_kind(body)}", line,
                         task=task_id, hint="e.g. {cmd: 'make all'}")
            return _placeholder(task_id, source)
        data = {k: v for k, v in body.items() if k != "id"} if listed else body
        fields = self.validate(TASK.validate_python, Task, data, body, f"task {task_id!r}: ",
                               extra=("id",) if listed else (), task=task_id,
                               vital=("cmd", "call"))
        if fields is None:
            return _placeholder(task_id, source)
        action = self.action(fields, task_id, body, line)
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}
        first_ref = len(self.task_refs)
        if "args" in fields or "kwargs" in fields:
            for key in ("args", "kwargs"):
                value = fields.get(key)
                if value is None:
                    continue
                try:
                    value = self.sub_value(_plain(value), body, (key,), task_id)
                    value = self.task_values(value, body, (key,), task_id)
                except ValueError as e:
                    self.problem(f"task {task_id!r}: {key} {e}", _line_of(body, (key,)),
                                 task=task_id)
                    continue
                if key == "args":
                    args = tuple(value)
                else:
                    kwargs = value
        options = self.options(fields, body, (), task_id)
        if "when" in options:
            options["when"] = self.condition(options["when"], body, task_id)
            if options["when"] is None:
                del options["when"]
        if len(self.task_refs) > first_ref:
            refs = [ref for _, ref, _ in self.task_refs[first_ref:]]
            written = options.get("depends_on") or ()
            written = [written] if isinstance(written, str) else list(written)
            options["depends_on"] = [*written, *dict.fromkeys(r for r in refs if r not in written)]
        if action is None:
            return _placeholder(task_id, source)
        return make_spec(task_id, action, args=args, kwargs=kwargs, options=options,
                         defaults=defaults, source=source)

    def action(
        self, fields: dict[str, Any], task_id: str, root: Any, line: int | None
    ) -> ShellCommand | CallRef | None:
        cmd, call = fields.get("cmd"), fields.get("call")
        if cmd is not None and call is not None:
            self.problem(f"task {task_id!r} has both cmd and call", line, task=task_id,
                         hint="a task runs either a shell command or a function")
            return None
        if cmd is not None:
            for key in ("args", "kwargs"):
                if fields.get(key) is not None:
                    self.problem(f"task {task_id!r}: {key} only go with call, not cmd",
                                 _line_of(root, (key,)), task=task_id,
                                 hint="put the arguments in the command line")
            cmd = self.sub(cmd, root, ("cmd",), task_id, quote=True)
            shell = self.commands.get(cmd)
            if shell is None:
                shell = self.commands[cmd] = ShellCommand(cmd)
            return shell
        if call is not None:
            ref = self.refs.get(call)
            if ref is None:  # tasks of one call share one reference, looked at once
                module, _, function = call.partition(":")
                if not module or not function:
                    self.problem(f"task {task_id!r}: call {short_repr(call)} is not of the form "
                                 "'module:function'", _line_of(root, ("call",)), task=task_id,
                                 hint="e.g. call: 'mypkg.jobs:compute'")
                    return None
                ref = self.refs[call] = CallRef(call, path=self.import_path)
            self.calls.append((task_id, call, self.file, _line_of(root, ("call",))))
            return ref
        self.problem(f"task {task_id!r} has neither cmd nor call", line, task=task_id,
                     hint="add cmd: '<shell command>' or call: 'module:function'")
        return None

    def options(
        self, fields: dict[str, Any] | None, root: Any, at: tuple[str, ...], task: str | None
    ) -> dict[str, Any]:
        """The options written in ``fields`` (defaults or a task), parameters substituted."""
        if not fields:
            return {}
        options = {k: v for k, v in fields.items() if k in TASK_OPTIONS}
        if options.get("env"):
            options["env"] = {k: self.sub(v, root, (*at, "env", k), task)
                              for k, v in options["env"].items()}
        if options.get("cwd"):
            options["cwd"] = self.sub(options["cwd"], root, (*at, "cwd"), task)
        return options

    # ---------------------------------------------------------------- parameters
    def use_params(self, header: Header, top: Any) -> None:
        """Take the file's ``params:`` as the declared names and defaults under the passed."""
        if header.params is None:
            return
        self.declared = header.params
        for name in header.params:
            if not NAME_RE.fullmatch(name):
                self.problem(f"parameter name {name!r} is not valid",
                             _line_of(top, ("params", name)),
                             hint="use letters, digits and _, not starting with a digit")
        self.params = {**header.params, **self.passed}

    def check_passed(self) -> None:
        """Raise for a passed parameter the file does not know, or a required one missing."""
        known = list(self.declared) if self.declared is not None else sorted(self.used)
        for name in self.passed:
            if name not in known:
                close = suggest(name, known)
                if self.declared is not None:
                    message = f"unknown parameter {name!r}: the pipeline declares " + (
                        ", ".join(repr(k) for k in known) or "none")
                else:
                    message = (f"unknown parameter {name!r}: the pipeline has no params: section "
                               f"and uses no ${{{name}}}")
                raise ParameterError(message + (f" (did you mean {close!r}?)" if close else ""))
        missing = [k for k, v in self.params.items() if v is None]
        if missing:
            raise ParameterError(f"parameter {missing[0]!r} has no default and must be passed: "
                                 f"-p {missing[0]}=VALUE")

    def sub(
        self, text: str, root: Any, loc: tuple[Any, ...], task: str | None, *, quote: bool = False
    ) -> str:
        """``text`` with ``${name}`` replaced (shell-quoted if ``quote``) and ``$${name}``
        unescaped; ``loc`` locates the text under ``root``, for problems."""
        if "$" not in text:
            return text

        def replace_one(match: re.Match[str]) -> str:
            escaped = match.group("escaped")
            if escaped is not None:
                return "${" + escaped + "}"
            name = match.group("name")
            if name.startswith("matrix."):
                return self.matrix_value(name, match.group(0), root, loc, task, quote)
            self.used.add(name)
            if name in self.params:
                value = self.params[name]
                if value is None:  # required and not passed: reported by check_passed
                    return match.group(0)
                return shlex.quote(value) if quote else value
            if self.declared is not None:
                if self.suggest_param is None:
                    self.suggest_param = Suggester(self.declared)
                close = self.suggest_param(name)
                where = f"task {task!r}: " if task else ""
                self.problem(
                    f"{where}unknown parameter ${{{name}}}", _line_of(root, loc), task=task,
                    hint=f"did you mean {close!r}?" if close else
                    f"declare it under params:, or write $${{{name}}} for a literal ${{{name}}}",
                )
            return match.group(0)

        return _REF_RE.sub(replace_one, text)

    def sub_value(self, value: Any, root: Any, loc: tuple[Any, ...], task: str | None) -> Any:
        """``value`` with parameters substituted, unquoted, in every string inside it."""
        if isinstance(value, str):
            return self.sub(value, root, loc, task)
        if isinstance(value, dict):
            return {k: self.sub_value(v, root, (*loc, k), task) for k, v in value.items()}
        if isinstance(value, list):
            return [self.sub_value(v, root, (*loc, i), task) for i, v in enumerate(value)]
        return value


# --------------------------------------------------------------------------- helpers
# What a value should have been, by pydantic error type; ``{ge}`` etc. come from the error.
_EXPECTED: dict[str, str] = {
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "finite_number": "must be a finite number",
    "too_short": "must not be empty",
}


def _strip_tags(root: Any, loc: tuple[Any, ...]) -> list[Any]:
    """``loc`` without pydantic's union tags, i.e. the keys as the file wrote them."""
    out: list[Any] = []
    node = root
    for i, part in enumerate(loc):
        if isinstance(node, dict) and isinstance(part, Hashable) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int):
            out.append(part)
            node = node[part] if 0 <= part < len(node) else None
        elif i == len(loc) - 1 and isinstance(node, dict) and part != "[key]":
            out.append(part)  # a missing key ("[key]": the key before it is what is wrong)
    return out


def _owners(tasks: Any) -> dict[int, str]:
    """The id of every mapping inside a task, mapped to the task's id."""
    bodies: list[tuple[Any, Any]] = []
    if isinstance(tasks, dict):
        bodies = list(tasks.items())
    elif isinstance(tasks, list):
        bodies = [(v.get("id"), v) for v in tasks if isinstance(v, dict)]
    owner: dict[int, str] = {}
    for task_id, body in bodies:
        stack = [body]
        while stack:
            value = stack.pop()
            if isinstance(value, dict | list) and isinstance(task_id, str):
                if id(value) in owner:  # seen: an alias
                    continue
                owner[id(value)] = task_id
                stack.extend(value.values() if isinstance(value, dict) else value)
    return owner


def _plain(value: Any, _inside: frozenset[int] = frozenset()) -> Any:
    """``value`` with the line-carrying containers replaced by plain dicts and lists.

    Raises ValueError when a YAML alias made the value contain itself, or when it nests too
    deep (JSON is read fast without that check: only arguments can hold such values).
    """
    if isinstance(value, dict | list):
        if id(value) in _inside:
            raise ValueError("contains itself, through a YAML alias")
        if len(_inside) >= MAX_DEPTH - _ARGUMENT_LEVEL:
            raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
        inside = _inside | {id(value)}
        if isinstance(value, dict):
            return {k: _plain(v, inside) for k, v in value.items()}
        return [_plain(v, inside) for v in value]
    return value


# How deep a task's args and kwargs are in the file: the top level, tasks:, the task.
_ARGUMENT_LEVEL = 3


def _too_deep(value: Any, levels: int) -> bool:
    """Whether ``value`` nests more than ``levels`` containers deep (iteratively)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > levels:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict)
                                                   else item))
    return False


def _dotted(path: list[Any]) -> str:
    """``["env", "A"]`` as ``env.A``, ``["tags", 0]`` as ``tags[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _placeholder(task_id: str, source: tuple[str, int | None]) -> TaskSpec:
    """Stands for a task with problems, so that its dependents' references still resolve."""
    return TaskSpec(id=task_id, action=ShellCommand(""), source=source)


def _is_extension(key: object) -> bool:
    """``x-...`` top-level keys are the user's own (as in Compose files), e.g. for anchors."""
    return isinstance(key, str) and key.startswith("x-")


def _number(value: object) -> object:
    """``1.0`` as ``1``, for messages."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _kind(value: object) -> str:
    names: dict[type, str] = {dict: "a mapping", list: "a list", str: "a string"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__

