"""The exception tree.

Three kinds of failure are kept apart, so that a caller can tell who has to act:

- *your input is wrong* — a ``ValueError`` subclass, carrying what a person needs to fix it;
- *the machinery is broken* — a ``Broken*`` error (an executor or store that stopped working);
- *a task failed* — the task's own exception, with its original type; a traceback from
  another process is attached as ``__cause__``.

::

    CorralError
    ├── ValidationError (ValueError)        the DAG or pipeline is invalid; .problems lists every one
    │   └── PipelineError                   a pipeline file could not be read or parsed
    ├── ParameterError (ValueError)         a -p key=value is malformed or unknown
    ├── InvalidTransition (RuntimeError)    a driver broke the scheduler's protocol
    ├── BrokenExecutor (RuntimeError)       an executor cannot run tasks any more
    │   └── WorkerCrashed                   the process running a task died
    ├── TaskTimeout (TimeoutError)          a task ran past its timeout
    ├── CommandFailed                       a shell task exited with a non-zero code
    └── Skip                                raised by a task to end as "skipped"

Each class's docstring is its default message.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BrokenExecutor",
    "CommandFailed",
    "CorralError",
    "InvalidTransition",
    "ParameterError",
    "PipelineError",
    "Problem",
    "Skip",
    "TaskTimeout",
    "ValidationError",
    "WorkerCrashed",
]


class CorralError(Exception):
    """corral failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a DAG or pipeline, located as precisely as we can."""

    message: str
    task: str | None = None
    file: str | None = None
    line: int | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        text = f"{where}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "message": self.message,
            "task": self.task,
            "file": self.file,
            "line": self.line,
            "hint": self.hint,
        }


class ValidationError(CorralError, ValueError):
    """The DAG is invalid."""

    def __init__(self, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = problems
        count = len(problems)
        head = (self.__doc__ or "").strip().rstrip(".")
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{head}: {count} {noun}\n{lines}")


class PipelineError(ValidationError):
    """The pipeline file is invalid."""


class ParameterError(CorralError, ValueError):
    """A parameter is malformed or unknown."""


class InvalidTransition(CorralError, RuntimeError):
    """A driver asked the scheduler for a transition its state machine forbids."""


class BrokenExecutor(CorralError, RuntimeError):
    """The executor cannot run tasks any more."""


class WorkerCrashed(BrokenExecutor):
    """The worker process running the task died."""


class TaskTimeout(CorralError, TimeoutError):
    """The task ran past its timeout."""


class CommandFailed(CorralError):
    """The command exited with a non-zero code."""

    def __init__(self, exit_code: int, *, log_path: str | None = None, tail: str = "") -> None:
        self.exit_code = exit_code
        self.log_path = log_path
        self.tail = tail
        if exit_code < 0:
            message = f"the command was killed by signal {-exit_code}"
        else:
            message = f"the command exited with code {exit_code}"
        if log_path:
            message += f" (log: {log_path})"
        if tail:
            message += "\n" + tail
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (_command_failed, (self.exit_code, self.log_path, self.tail))


def _command_failed(exit_code: int, log_path: str | None, tail: str) -> CommandFailed:
    return CommandFailed(exit_code, log_path=log_path, tail=tail)


class Skip(CorralError):
    """The task asked to be skipped."""
