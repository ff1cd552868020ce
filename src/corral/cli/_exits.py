"""What ``corral`` exits with, and the click errors that map to each code.

A leaf of the CLI: every command module and the group (:mod:`._app`) take their errors from
here, so none of them needs another to say how it fails.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from corral._result import RunResult

__all__ = [
    "ExecutorError",
    "ExitCode",
    "LockedError",
    "StoreError",
    "UserError",
    "exit_code_for",
]


class ExitCode(enum.IntEnum):
    """What ``corral`` exits with. Listed in ``corral --help``."""

    OK = 0  # every task succeeded (failures of allow_failure tasks aside), or the command did
    TASK_FAILED = 1  # a task failed, or could not run because one did
    INVALID = 2  # invalid input: pipeline, parameters, options, a missing file or run
    STORE = 3  # the run store (or the fleet's broker) cannot be used: locked, unreachable...
    RUN_LOCKED = 4  # the run to resume is still alive elsewhere (its lease is live)
    EXECUTOR = 5  # an executor cannot start: its cluster is unreachable or unusable
    INTERRUPTED = 130  # stopped by SIGINT (Ctrl-C): 128 + 2
    TERMINATED = 143  # stopped by SIGTERM: 128 + 15


_EXIT_HELP = {
    ExitCode.OK: "all tasks succeeded (allowed failures aside)",
    ExitCode.TASK_FAILED: "a task failed",
    ExitCode.INVALID: "invalid input (pipeline, parameters, options, missing file or run)",
    ExitCode.STORE: "the run store or the fleet's broker cannot be used (locked, full disk, "
    "unreachable, newer schema)",
    ExitCode.RUN_LOCKED: "the run to resume is still alive elsewhere (its lease is live)",
    ExitCode.EXECUTOR: "an executor cannot start (a Dask scheduler unreachable); nothing ran",
    ExitCode.INTERRUPTED: "interrupted by SIGINT (Ctrl-C)",
    ExitCode.TERMINATED: "stopped by SIGTERM (any other signal: 128 + its number)",
}


def exit_code_for(result: RunResult) -> int:
    """The exit code of a finished run."""
    status = str(result.status)
    if status == "interrupted":
        # A run stopped by a signal exits as the shell reports a process killed by it;
        # cancelled without one (Runner.cancel()) counts as Ctrl-C.
        return 128 + result.signal if result.signal else int(ExitCode.INTERRUPTED)
    if status == "failed":
        return int(ExitCode.TASK_FAILED)
    return int(ExitCode.OK)


class UserError(click.ClickException):
    """The input is wrong; the message says what to change. Exits 2, without a traceback."""

    exit_code = int(ExitCode.INVALID)


class StoreError(click.ClickException):
    """The run store cannot be used; the message names it. Exits 3, without a traceback."""

    exit_code = int(ExitCode.STORE)


class ExecutorError(click.ClickException):
    """An executor cannot start; the message names it. Exits 5, without a traceback."""

    exit_code = int(ExitCode.EXECUTOR)


class LockedError(click.ClickException):
    """The run is held by a live process. Exits 4, without a traceback."""

    exit_code = int(ExitCode.RUN_LOCKED)
