"""Executors by name: how a task's ``executor: NAME`` becomes an :class:`Executor`.

Three places a name can come from, the first that has it wins::

    the run's own        dag.run(executors={"inline": InlineExecutor()})   instances
    the built-ins        async, thread, process, shell                     (this module)
    third parties        entry points in the group "corral.executors":     "pkg.mod:MyExecutor"
                         [project.entry-points."corral.executors"]
                         inline = "pkg.mod:InlineExecutor"

A built-in or entry point names an :class:`Executor` subclass; the run makes one with its
:meth:`~Executor.for_run` when a task uses it and the run was not given an instance. Nothing is
imported until needed: the built-ins' action kinds are listed here, and entry points are read
(once per process) only when a task names an executor that is neither given nor built in, so
a run of built-in executors never pays for scanning installed packages.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING

from corral.executors._base import ActionKind, Executor

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = [
    "BUILTINS",
    "ENTRY_POINT_GROUP",
    "UnknownExecutor",
    "action_kind",
    "executor_class",
    "known_names",
]

ENTRY_POINT_GROUP = "corral.executors"

# name -> (class, what it runs). The kinds are written here so that validating a pipeline of
# built-in executors imports none of them.
BUILTINS: dict[str, tuple[str, ActionKind]] = {
    "async": ("corral.executors.asyncio:AsyncExecutor", "callables"),
    "process": ("corral.executors.process:ProcessExecutor", "callables"),
    "shell": ("corral.executors.shell:ShellExecutor", "commands"),
    "thread": ("corral.executors.thread:ThreadExecutor", "callables"),
}


class UnknownExecutor(LookupError):
    """No executor of that name: not given to the run, not built in, no entry point."""


@cache
def _entry_points() -> dict[str, EntryPoint]:
    from importlib import metadata  # ~20 ms: only when a name is not given or built in

    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def known_names(given: Mapping[str, Executor] | None = None) -> list[str]:
    """Every executor name a task may use (sorted), entry points included."""
    return sorted({*(given or {}), *BUILTINS, *_entry_points()})


def executor_class(name: str) -> type[Executor]:
    """The class a built-in or entry-point name stands for (imported now)."""
    builtin = BUILTINS.get(name)
    if builtin is not None:
        module, _, attr = builtin[0].partition(":")
        cls: type[Executor] = getattr(importlib.import_module(module), attr)
        return cls
    entry = _entry_points().get(name)
    if entry is None:
        raise UnknownExecutor(name)
    try:
        loaded = entry.load()
    except Exception as exc:  # a broken plug-in: say which and why
        raise UnknownExecutor(f"{name} (entry point {entry.value!r} failed to load: "
                              f"{type(exc).__name__}: {exc})") from exc
    if not (isinstance(loaded, type) and issubclass(loaded, Executor)):
        raise UnknownExecutor(f"{name} (entry point {entry.value!r} is not an Executor "
                              "subclass)")
    return loaded


def action_kind(name: str, given: Mapping[str, Executor] | None = None) -> ActionKind:
    """What executor ``name`` runs: ``"callables"`` or ``"commands"``. Raises
    :class:`UnknownExecutor` for a name found nowhere."""
    if given and name in given:
        return given[name].runs
    builtin = BUILTINS.get(name)
    if builtin is not None:
        return builtin[1]
    return executor_class(name).runs
