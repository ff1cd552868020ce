"""Task kinds: which tasks of a graph are likely to take about as long as each other.

A first run has no estimates and no history, yet most DAGs repeat a few kinds of work many
times (``bowtie2_00000003`` and ``bowtie2_00000004``, or a hundred ``mProject_ID*`` tasks).
Once one attempt of a kind has finished, its duration is a fair guess for the rest of that
kind (:mod:`corral._estimates`). This module only *names* the kinds, once, before the run:

- the **action**: the callable (module and qualified name), the ``module:function`` of a
  ``call:``, or the command *template* of a shell task — its numbers abstracted and its
  operands that look like paths or files abstracted, its program and flags kept
  (``bowtie2 -p 4 -x ref/hg38 -U s3.fq`` → ``bowtie# -p # -x * -U *``);
- the **stem** of the task id: the id without its digits (``bowtie2_00000003`` →
  ``bowtie_``, ``mProject_ID0000001`` → ``mProject_ID``; dropped rather than replaced by a
  mark: ``str.translate`` does it in C, and the 100,000 ids of a big DAG cost little).

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
_NO_DIGITS = str.maketrans("", "", "0123456789")


def id_stem(task_id: str) -> str:
    """The task id without its digits: ``bowtie2_00000003`` → ``bowtie_``."""
    return task_id.translate(_NO_DIGITS)


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
    kinds: dict[tuple[int, str], int] = {}
    families: dict[str, int] = {}
    family_by_action: dict[int, int] = {}  # id(action) -> family; DAGs share a few actions
    no_digits = _NO_DIGITS
    kind_of: list[int] = []
    family_of: list[int] = []
    for spec in specs:
        action = spec.action
        family = family_by_action.get(id(action))
        if family is None:
            family = families.setdefault(_action_name(action), len(families))
            family_by_action[id(action)] = family
        family_of.append(family)
        key = (family, spec.id.translate(no_digits))
        kind = kinds.get(key)
        if kind is None:
            kind = kinds[key] = len(kinds)
        kind_of.append(kind)
    return kind_of, family_of
