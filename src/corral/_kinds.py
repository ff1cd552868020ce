"""Task kinds: which tasks of a graph are likely to take about as long as each other.

A first run has no estimates and no history, yet most DAGs repeat a few kinds of work many
times (``bowtie2_00000003`` and ``bowtie2_00000004``, or a hundred ``mProject_ID*`` tasks).
Once one attempt of a kind has finished, its duration is a fair guess for the rest of that
kind (:mod:`corral._estimates`). This module only *names* the kinds, once, before the run:

- the **action**: the callable (module and qualified name), the ``module:function`` of a
  ``call:``, or the command *template* of a shell task — its numbers abstracted and its
  operands that look like paths or files abstracted, its program and flags kept
  (``bowtie2 -p 4 -x ref/hg38 -U s3.fq`` → ``bowtie# -p # -x * -U *``);
- the **stem** of the task id: the id with every run of digits abstracted
  (``bowtie2_00000003`` → ``bowtie#_#``, ``mProject_ID0000001`` → ``mProject_ID#``).

A task's *kind* is its (action, stem) pair; its *family* is its action alone, the coarser
guess used while no task of its own kind has finished yet. Both are numbered densely, in
order of first appearance, so the scheduler indexes plain lists with them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from corral._spec import CallRef, ShellCommand, TaskSpec

__all__ = ["command_template", "id_stem", "task_kinds"]

_DIGITS = re.compile(r"\d+")


def id_stem(task_id: str) -> str:
    """The task id with every run of digits abstracted: ``bowtie2_00000003`` → ``bowtie#_#``."""
    return _DIGITS.sub("#", task_id)


def command_template(cmd: str) -> str:
    """A shell command with what varies between tasks of one kind abstracted: numbers become
    ``#`` and operands that name files (containing ``/`` or ``.``) become ``*``; the program
    and the flags stay."""
    words = cmd.split()
    out: list[str] = []
    for k, word in enumerate(words):
        if k and not word.startswith("-") and ("/" in word or "." in word):
            out.append("*")
        else:
            out.append(_DIGITS.sub("#", word))
    return " ".join(out)


def _action_name(action: Any) -> str:
    if isinstance(action, ShellCommand):
        return "sh:" + command_template(action.cmd)
    if isinstance(action, CallRef):
        return "call:" + action.target
    module = getattr(action, "__module__", "") or ""
    name = getattr(action, "__qualname__", None) or type(action).__qualname__
    return f"py:{module}.{name}"


def task_kinds(specs: Sequence[TaskSpec]) -> tuple[list[int], list[int]]:
    """Each task's kind and family, as dense integers (see the module docstring)."""
    kinds: dict[tuple[str, str], int] = {}
    families: dict[str, int] = {}
    by_action: dict[int, str] = {}  # id(action) -> name; DAGs share a few action objects
    kind_of: list[int] = []
    family_of: list[int] = []
    for spec in specs:
        action = spec.action
        name = by_action.get(id(action))
        if name is None:
            name = by_action[id(action)] = _action_name(action)
        family_of.append(families.setdefault(name, len(families)))
        kind_of.append(kinds.setdefault((name, id_stem(spec.id)), len(kinds)))
    return kind_of, family_of
