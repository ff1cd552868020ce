"""How ``call: "module:function"`` finds the user's code.

This module owns the *import path* of a pipeline — the directories it adds to ``sys.path`` and
where they go — and resolving a ``module:function`` reference, at run time
(:func:`resolve_call`) and at validation (:func:`check_calls`), with errors that name the
module, every directory searched and the nearest name.

Where a module is looked for, in this order::

    sys.path as Python built it   the script's directory, PYTHONPATH, the standard library,
                                  site-packages (installed and editable packages)
    --path DIR / CORRAL_PATH      appended by the CLI when a command starts
    python_path: [...]            the pipeline's own entries, relative to its file
    the pipeline file's directory

Policy:

- **Appended, never put first.** corral imports PyYAML, pydantic, click, rich, cloudpickle and
  much of the standard library lazily, while it runs. A directory put at the front of
  ``sys.path`` would let a user's ``yaml.py`` (or ``json.py``, ``random.py``) next to the
  pipeline replace them. So a pipeline's directories come after everything Python itself put
  there. The other side of that choice: a user's module named like an installed or standard one
  is not the one imported; the error then says which file shadows which, and how to fix it.
  Whoever wants a directory first sets ``PYTHONPATH``, which Python puts before site-packages.
- **Additive and idempotent.** A directory already on ``sys.path`` is not added again; nothing
  is ever removed (modules already imported from it would dangle). ``corral serve`` running
  pipelines from several directories ends up with all of them, in the order first seen.
- **Every executor sees the same path.** The ``thread`` and ``async`` executors run in this
  process; the ``process`` executor's workers get this process's ``sys.path``, in order, as
  their ``PYTHONPATH`` when they start (:mod:`corral.executors.process`), and a call is resolved
  here before its first attempt is handed to a worker.
- **Checking may import.** :func:`check_calls` with ``execute=True`` imports each module (its
  top-level code runs, as it would at run time); with ``execute=False`` it finds the module
  without running any of its code and looks for the function in its source (``ast``), which
  cannot see names made at run time (``globals()[...]``, ``__getattr__``, ``import *``): those
  are given the benefit of the doubt.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import os
import pkgutil
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from corral._errors import CallNotFound, Problem
from corral._words import suggest

__all__ = ["add_to_sys_path", "check_calls", "resolve_call", "search_path"]

_lock = threading.Lock()


def add_to_sys_path(dirs: Iterable[str]) -> None:
    """Append each of ``dirs`` (made absolute) to ``sys.path`` unless it is there already."""
    wanted = [os.path.abspath(d) for d in dirs]
    if not wanted:
        return
    with _lock:
        present = {os.path.abspath(p or os.curdir) for p in sys.path}
        for d in wanted:
            if d not in present:
                sys.path.append(d)
                present.add(d)


def search_path(extra: Sequence[str] = ()) -> list[str]:
    """The directories a top-level module is looked for in, in order: ``sys.path`` (``''`` as
    the working directory) and then those of ``extra`` not in it already."""
    out: list[str] = []
    for p in [*sys.path, *extra]:
        d = os.path.abspath(p or os.curdir)
        if d not in out:
            out.append(d)
    return out


def resolve_call(target: str, path: Sequence[str] = ()) -> Callable[..., Any]:
    """The function ``target`` (``"package.module:function"``, or ``module:Class.method``)
    names, importing its module with ``path`` appended to ``sys.path``.

    Raises :class:`CallNotFound` when the module or the function cannot be found (with the
    directories searched and the nearest names), and lets an exception raised by the module's
    own code while it is imported through, with a note naming the call.
    """
    module_name, attr = _split(target)
    add_to_sys_path(path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not _is_missing(exc, module_name):
            exc.add_note(f"(while importing module {module_name!r} for call {target!r})")
            raise
        raise _module_not_found(target, module_name, path) from exc
    except Exception as exc:
        exc.add_note(f"(while importing module {module_name!r} for call {target!r})")
        raise
    obj: Any = module
    for k, part in enumerate(attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = ".".join(attr.split(".")[:k])
            raise _attr_not_found(target, module, owner, part, path) from None
    if not callable(obj):
        raise CallNotFound(f"call {target!r} names {type(obj).__name__} {attr!r} of module "
                           f"{module_name!r} ({_where(module)}), not a function",
                           target=target)
    return obj  # type: ignore[no-any-return]


def check_calls(
    calls: Iterable[tuple[str, str, str | None, int | None]],
    path: Sequence[str] = (),
    *,
    execute: bool = True,
) -> list[Problem]:
    """A problem for each ``(task, target, file, line)`` whose target cannot be found.

    ``execute`` imports the modules (their top-level code runs); otherwise they are found
    without running anything and functions are looked for in their source. A target used by
    several tasks is checked once and reported at its first task, with how many others call it.
    """
    first: dict[str, Problem | None] = {}  # target -> its problem at its first task, or None
    others: dict[str, int] = {}
    for task, target, file, line in calls:
        if target in first:
            others[target] = others.get(target, 0) + 1
            continue
        first[target] = None
        try:
            if execute:
                resolve_call(target, path)
            else:
                _find_call(target, path)
        except CallNotFound as exc:
            first[target] = Problem(f"task {task!r}: {exc.reason}", task=task, file=file,
                                    line=line, hint=exc.hint)
        except (Exception, SystemExit) as exc:  # the module's own code failed on import
            module_name = target.partition(":")[0]
            first[target] = Problem(
                f"task {task!r}: importing module {module_name!r} for call {target!r} failed: "
                f"{type(exc).__name__}: {exc}{_raised_at(exc)}",
                task=task, file=file, line=line)
    problems = []
    for target, problem in first.items():
        if problem is None:
            continue
        if target in others:
            problem = Problem(f"{problem.message} (and {others[target]} other task(s) calling "
                              "it)", task=problem.task, file=problem.file, line=problem.line,
                              hint=problem.hint)
        problems.append(problem)
    return problems


# ---------------------------------------------------------------------------- internals
def _split(target: str) -> tuple[str, str]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise CallNotFound(f"call {target!r} is not of the form 'module:function'",
                           target=target, hint="e.g. call: 'mypkg.jobs:compute'")
    return module_name, attr


def _is_missing(exc: ModuleNotFoundError, module_name: str) -> bool:
    """Whether ``exc`` says ``module_name`` (or a package above it) does not exist, rather
    than that the module exists and imports something missing."""
    name = exc.name or ""
    return module_name == name or module_name.startswith(name + ".")


def _where(module: Any) -> str:
    return getattr(module, "__file__", None) or "built in"


def _module_not_found(target: str, module_name: str, path: Sequence[str]) -> CallNotFound:
    """The error for a module that does not exist: where it was looked for, what is close."""
    parts = module_name.split(".")
    # The deepest package that does exist, and the first name under it that does not.
    parent = None
    for k in range(len(parts) - 1, 0, -1):
        found = sys.modules.get(".".join(parts[:k]))
        if found is not None:
            parent = found
            parts_found = k
            break
    if parent is not None:
        locations = list(getattr(parent, "__path__", None) or [])
        if not locations:
            return _not_a_package(target, module_name, parent.__name__, _where(parent))
        return _no_submodule(target, module_name, parent.__name__, parts[parts_found],
                             locations)
    searched = search_path(path)
    top = parts[0]
    known = {m.name for m in pkgutil.iter_modules(searched)} | set(sys.builtin_module_names)
    close = suggest(top, sorted(known))
    hints = []
    if close:
        hints.append(f"did you mean {'.'.join([close, *parts[1:]])!r}?")
    cwd = os.getcwd()
    if cwd not in searched and _has_module(cwd, top):
        hints.append(f"{top!r} is in the working directory, which is not on the import path: "
                     "add --path . (or CORRAL_PATH, or python_path: in the pipeline)")
    elif not close:
        hints.append("put it next to the pipeline file, list its directory under python_path: "
                     "or pass --path DIR (CORRAL_PATH); or install its package")
    return CallNotFound(
        f"cannot import module {module_name!r} for call {target!r}: no module named {top!r} "
        f"in {', '.join(searched)}",
        target=target, module=module_name, searched=tuple(searched),
        hint="; ".join(hints) or None)


def _not_a_package(target: str, module_name: str, parent: str, origin: str | None) -> CallNotFound:
    return CallNotFound(f"cannot import module {module_name!r} for call {target!r}: "
                        f"{parent!r} ({origin}) is a module, not a package",
                        target=target, module=module_name)


def _no_submodule(
    target: str, module_name: str, package: str, missing: str, locations: list[str]
) -> CallNotFound:
    """A package that exists, without the module asked for in it."""
    close = suggest(missing, [m.name for m in pkgutil.iter_modules(locations)])
    return CallNotFound(
        f"cannot import module {module_name!r} for call {target!r}: package {package!r} has "
        f"no module {missing!r}; searched {', '.join(locations)}",
        target=target, module=module_name, searched=tuple(locations),
        hint=f"did you mean {package + '.' + close!r}?" if close else None)


def _attr_not_found(
    target: str, module: Any, owner: str, part: str, path: Sequence[str]
) -> CallNotFound:
    """The error for a function missing from a module that imported fine."""
    holder = module
    for name in filter(None, owner.split(".")):
        holder = getattr(holder, name)
    names = [n for n in dir(holder) if not n.startswith("_") and callable(getattr(holder, n,
                                                                                   None))]
    close = suggest(part, names)
    what = f"{module.__name__}.{owner}" if owner else f"module {module.__name__!r}"
    hints = [f"did you mean {close!r}?"] if close else []
    shadowed = _shadowed(module.__name__, path)
    if shadowed:
        hints.append(shadowed)
    return CallNotFound(
        f"call {target!r}: {what} ({_where(module)}) has no function {part!r}",
        target=target, module=module.__name__, hint="; ".join(hints) or None)


def _shadowed(module_name: str, path: Sequence[str]) -> str | None:
    """A note when the top-level package of ``module_name`` is found elsewhere than a
    same-named module in one of the pipeline's directories (``path``): an installed or
    standard module comes first. Runs no module code."""
    top = module_name.partition(".")[0]
    spec = _find_top(top, ())
    if spec is None:  # only the pipeline's directories have it: nothing shadows it
        return None
    origin = spec.origin if spec.has_location else None
    for d in path:
        candidate = _module_file(d, top)
        if candidate is not None and (origin is None or
                                      os.path.realpath(candidate) != os.path.realpath(origin)):
            return (f"{candidate} is not the {top!r} imported: {origin or 'a built-in module'} "
                    "comes first on the import path (a pipeline's directories come after the "
                    "standard library and installed packages); rename yours")
    return None


def _module_file(d: str, name: str) -> str | None:
    for candidate in (os.path.join(d, name + ".py"), os.path.join(d, name, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _has_module(d: str, name: str) -> bool:
    return _module_file(d, name) is not None or os.path.isdir(os.path.join(d, name))


def _raised_at(exc: BaseException) -> str:
    """`` (file:line)`` of the innermost frame of ``exc``'s traceback, if any."""
    tb = exc.__traceback__
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" ({exc.filename}:{exc.lineno})"
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return ""
    return f" ({last.tb_frame.f_code.co_filename}:{last.tb_lineno})"


# ---------------------------------------------------------------------------- without importing
def _find_call(target: str, path: Sequence[str]) -> None:
    """Raise :class:`CallNotFound` unless ``target``'s module can be found and (when its
    source can be read) defines the function — without running any of the module's code."""
    module_name, attr = _split(target)
    parts = module_name.split(".")
    spec = _find_top(parts[0], path)
    if spec is None:
        raise _module_not_found(target, module_name, path)
    for k in range(1, len(parts)):
        locations = spec.submodule_search_locations
        package = ".".join(parts[:k])
        if locations is None:
            raise _not_a_package(target, module_name, package, spec.origin)
        sub = importlib.machinery.PathFinder.find_spec(f"{package}.{parts[k]}",
                                                       list(locations))
        if sub is None:
            raise _no_submodule(target, module_name, package, parts[k], list(locations))
        spec = sub
    defined = _top_level_names(spec.origin)
    first = attr.partition(".")[0]
    if defined is not None and first not in defined:
        close = suggest(first, sorted(n for n in defined if not n.startswith("_")))
        hints = [f"did you mean {close!r}?"] if close else []
        shadowed = _shadowed(module_name, path)
        if shadowed:
            hints.append(shadowed)
        raise CallNotFound(
            f"call {target!r}: module {module_name!r} ({spec.origin}) has no function {first!r}",
            target=target, module=module_name, hint="; ".join(hints) or None)


def _find_top(name: str, path: Sequence[str]) -> Any:
    """The spec of top-level module ``name``, as an import would find it first (meta path
    finders included, e.g. editable installs), else in ``path``; runs no module code."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None and path:
        spec = importlib.machinery.PathFinder.find_spec(name, [os.path.abspath(d) for d in path])
    return spec


def _top_level_names(origin: str | None) -> set[str] | None:
    """The names a Python source file binds at its top level, or None when that cannot be
    known from the source (not a ``.py`` file, unreadable, ``import *``, ``__getattr__``)."""
    if not origin or not origin.endswith(".py"):
        return None
    try:
        with open(origin, "rb") as f:
            tree = ast.parse(f.read(), filename=origin)
    except (OSError, SyntaxError, ValueError):
        return None
    names: set[str] = set()
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.partition(".")[0])
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
            for body in ("body", "orelse", "finalbody"):
                stack.extend(getattr(node, body, []))
            for handler in getattr(node, "handlers", []):
                stack.extend(handler.body)
    if "__getattr__" in names:
        return None
    return names
