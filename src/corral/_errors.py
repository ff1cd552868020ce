"""The exception classes; their public home, with the tree, is :mod:`corral.errors`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BrokenExecutor",
    "BrokenStore",
    "CallNotFound",
    "CircuitOpen",
    "CommandFailed",
    "ConfigError",
    "CorralError",
    "CorruptHistory",
    "ExpressionError",
    "InvalidTransition",
    "NotResumable",
    "ParameterError",
    "PipelineError",
    "Problem",
    "RunLocked",
    "RunNotFound",
    "Skip",
    "StartRefused",
    "StoreTooNew",
    "TaskHung",
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


class ConfigError(CorralError, ValueError):
    """The configuration is invalid: a file's syntax, an unknown key or a bad value (the
    message names the file, key and line), or a variable's value."""


class StartRefused(ConfigError):
    """The settings ask for more than the machine or the database has: nothing started. The
    message names the numbers and the setting to change."""


class ExpressionError(CorralError, ValueError):
    """A ``${{ ... }}`` expression is not one, or cannot be evaluated."""


class CallNotFound(CorralError, ImportError, ValueError):
    """The module or the function of a ``module:function`` call cannot be found.

    ``reason`` says what is missing and where it was looked for (``searched``, the directories
    in order); ``hint`` the nearest name or how to put the module on the import path.
    """

    def __init__(
        self,
        reason: str,
        *,
        target: str,
        module: str | None = None,
        searched: tuple[str, ...] = (),
        hint: str | None = None,
    ) -> None:
        self.reason = reason
        self.target = target
        self.module = module
        self.searched = searched
        self.hint = hint
        super().__init__(f"{reason} ({hint})" if hint else reason)

    def __reduce__(self) -> tuple[object, ...]:
        return (_call_not_found, (self.reason, self.target, self.module, self.searched,
                                  self.hint))


def _call_not_found(
    reason: str, target: str, module: str | None, searched: tuple[str, ...], hint: str | None
) -> CallNotFound:
    return CallNotFound(reason, target=target, module=module, searched=searched, hint=hint)


class InvalidTransition(CorralError, RuntimeError):
    """A driver asked the scheduler for a transition its state machine forbids."""


class BrokenExecutor(CorralError, RuntimeError):
    """The executor cannot run tasks any more."""


class WorkerCrashed(BrokenExecutor):
    """The worker process running the task died."""


class BrokenBroker(CorralError, RuntimeError):
    """The fleet's broker cannot be used (unreachable, refused, not a broker URL)."""


class TaskTimeout(CorralError, TimeoutError):
    """The task ran past its timeout."""


class TaskHung(CorralError, TimeoutError):
    """The task showed no sign of life for longer than its heartbeat."""


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


class CircuitOpen(CorralError, RuntimeError):
    """The task's circuit breaker is open: it failed at once, without running."""

    def __init__(self, message: str | None = None, *, breaker: str | None = None) -> None:
        self.breaker = breaker
        super().__init__(message)


class ForEachError(CorralError, ValueError):
    """A ``for_each`` task could not fan out: its upstream returned something other than a
    list, or did not succeed. The mapped task fails with it, without retrying."""


class PlanError(CorralError, ValueError):
    """A planner task's plan cannot join the run (an id clash, an unknown dependency, a cycle,
    an action or argument that cannot be stored): the planner fails with it."""


class Skip(CorralError):
    """The task asked to be skipped."""


class BrokenStore(CorralError, RuntimeError):
    """The run store cannot be used."""

    def __init__(self, message: str | None = None, *, url: str | None = None) -> None:
        self.url = url
        head = message or (self.__doc__ or "").strip()
        super().__init__(f"{head} (store: {url})" if url else head)


class StoreTooNew(BrokenStore):
    """The store was written by a newer version of corral."""


class CorruptHistory(BrokenStore):
    """A stored run cannot be read (a row of the wrong shape: damaged, or written by something
    else), or its history breaks the task state machine."""

    def __init__(
        self,
        reason: str,
        *,
        run_id: str,
        task: str | None,
        transition: str | None = None,
        url: str | None,
    ) -> None:
        self.run_id = run_id
        self.task = task
        self.transition = transition
        self.reason = reason
        what = f"task {task!r} of run {run_id!r}" if task else f"run {run_id!r}"
        where = f"{transition}: " if transition else ""
        super().__init__(f"corrupt history: {what}: {where}{reason}", url=url)


class RunLocked(CorralError, RuntimeError):
    """The run is held by another live process."""

    def __init__(self, run_id: str, *, owner: str | None, lease_until: object) -> None:
        self.run_id = run_id
        self.owner = owner
        self.lease_until = lease_until
        super().__init__(
            f"run {run_id!r} is held by {owner or 'another process'} "
            f"(lease live until {lease_until}); wait for it to end or for the lease to lapse"
        )


class RunNotFound(CorralError, ValueError):
    """No run with that id in the store."""


class NotResumable(CorralError, ValueError):
    """The run cannot be resumed: it succeeded, or another run already resumed it.

    ``why`` is ``"succeeded"``, ``"resumed"`` or (from ``DAG.run``) ``"other_dag"``: the run
    is another DAG's. For callers that answer each differently.
    """

    def __init__(self, message: str, *, why: str) -> None:
        super().__init__(message)
        self.why = why
