"""Task definitions: what a task is, before any run of it.

A :class:`TaskSpec` is the immutable definition of one task — its action (a Python callable, a
``module:function`` reference or a shell command), its dependencies and its options. Both front
ends produce them: the Python API (``corral.DAG``) and pipeline files (``corral._pipeline``).
:mod:`corral._graph` turns a list of specs into a validated, integer-indexed graph.

Options are normalised once here (durations to float seconds, resources to a dict of floats), so
nothing downstream re-checks them on the hot path.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

__all__ = [
    "ENDS_ATTEMPT",
    "CallRef",
    "Resources",
    "RetryPolicy",
    "ShellCommand",
    "TaskRef",
    "TaskSpec",
    "TaskState",
    "TriggerRule",
    "refs_in",
    "seconds",
    "substitute_refs",
    "takes_values",
]


class TaskState(enum.StrEnum):
    """Where one task is in its life within a run."""

    PENDING = "pending"  # waiting for its dependencies
    READY = "ready"  # dependencies satisfied, waiting for a slot and resources
    RUNNING = "running"  # an attempt is executing
    RETRY_WAIT = "retry_wait"  # an attempt failed; the next waits out its backoff
    SUCCEEDED = "succeeded"  # final: an attempt succeeded
    FAILED = "failed"  # final: the last attempt failed
    SKIPPED = "skipped"  # final: the task asked to be skipped, or an upstream was skipped
    UPSTREAM_FAILED = "upstream_failed"  # final: a dependency failed, so it never ran
    CANCELLED = "cancelled"  # final: the run stopped (fail-fast, Ctrl-C) before it finished

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.SKIPPED,
        TaskState.UPSTREAM_FAILED,
        TaskState.CANCELLED,
    }
)

ENDS_ATTEMPT = frozenset(
    {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.RETRY_WAIT,
        TaskState.SKIPPED,
        TaskState.CANCELLED,
    }
)
"""The states a running attempt ends in: a transition into one of them from ``running`` ends
that attempt (``cancelled`` and ``skipped`` also end tasks that never ran)."""


class TriggerRule(enum.StrEnum):
    """When a task may run, given how its dependencies ended."""

    ALL_SUCCESS = "all_success"  # every dependency succeeded (or failed with allow_failure)
    ALL_DONE = "all_done"  # every dependency reached a final state, however it ended


def seconds(value: float | int | timedelta | None, *, what: str = "duration") -> float | None:
    """Normalise a duration given as a number of seconds or a timedelta."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds or a timedelta, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a task is retried and how long it waits in between.

    The delay before retry *n* (1-based) is ``delay * backoff ** (n - 1)``, capped at
    ``max_delay``, then spread by ``jitter``: multiplied by a uniform factor in
    ``[1 - jitter, 1]`` so that many tasks failing together do not retry in lock-step.
    """

    retries: int = 0
    delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.1

    def delay_for(self, retry: int, rand: float) -> float:
        """Seconds to wait before retry number ``retry`` (1-based); ``rand`` is in [0, 1)."""
        base = min(self.delay * self.backoff ** (retry - 1), self.max_delay)
        return base * (1.0 - self.jitter * rand)


@dataclass(frozen=True, slots=True)
class ShellCommand:
    """A shell command line, run with ``/bin/sh -c``."""

    cmd: str

    def __str__(self) -> str:
        return self.cmd


@dataclass(frozen=True, slots=True)
class CallRef:
    """A ``module:function`` reference, imported when the task runs (or is validated).

    ``path`` lists directories appended to ``sys.path`` before the import: a pipeline's
    ``python_path:`` entries and its own directory (see :mod:`corral._imports`). It is where
    to look, not what the task does: equality and fingerprints ignore it, so a pipeline moved
    to another directory is the same pipeline.
    """

    target: str
    path: tuple[str, ...] = field(default=(), compare=False)

    def resolve(self) -> Callable[..., Any]:
        """The function; raises :class:`~corral._errors.CallNotFound` when it cannot be found."""
        from corral._imports import resolve_call

        return resolve_call(self.target, self.path)

    def __str__(self) -> str:
        return self.target


@dataclass(frozen=True, slots=True)
class TaskRef:
    """A placeholder, in a task's arguments, for another task's return value."""

    id: str


Resources = Mapping[str, float]
"""A resource request or capacity: ``{"cpu": 2, "memory_mb": 512, "gpu": 1}``."""

Action = Callable[..., Any] | ShellCommand | CallRef


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """The definition of one task.

    ``depends_on`` lists every dependency, including those implied by :class:`TaskRef`
    arguments. ``executor`` is ``None`` for "choose from the action": ``async`` for a coroutine
    function, ``shell`` for a command, ``thread`` otherwise.
    """

    id: str
    action: Action
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    timeout: float | None = None
    heartbeat: float | None = None
    priority: int = 0
    resources: Resources = field(default_factory=dict)
    executor: str | None = None
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    allow_failure: bool = False
    estimate: float | None = None
    tags: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    queue: str | None = None  # the fleet queue (None: "default"); where, not what: no fingerprint
    # when: a corral._expressions.Condition; the task is skipped when it does not hold.
    when: Any = None
    # File globs the task reads and writes, for --changed-only (corral._changes); the digest
    # of the inputs' contents, when one was taken, is part of the fingerprint.
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    inputs_digest: str | None = None
    # Flow control (corral._limits): names of declared rate limits and of a circuit breaker.
    rate_limit: tuple[str, ...] = ()
    breaker: str | None = None
    # Fan-out (corral._fanout): the id of the task over whose returned list this one runs,
    # one instance per item; None for an ordinary task.
    for_each: str | None = None
    # Where the task was defined, for error messages: (file, line).
    source: tuple[str, int | None] | None = None

    @property
    def executor_name(self) -> str:
        if self.executor is not None:
            return self.executor
        if isinstance(self.action, ShellCommand):
            return "shell"
        if isinstance(self.action, CallRef):
            return "thread"
        if inspect.iscoroutinefunction(self.action):
            return "async"
        return "thread"

    def evolve(self, **changes: Any) -> TaskSpec:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def fingerprint(self) -> str:
        """A hash of what the task does, to tell whether its definition changed between runs."""
        return fingerprints([self])[0]


def fingerprints(specs: Sequence[TaskSpec]) -> list[str]:
    """:meth:`TaskSpec.fingerprint` of each of ``specs``, in bulk: the tasks of a DAG mostly
    share a few actions, so each action is hashed once and its hasher copied per task (a
    recorded run fingerprints every task before it starts, and a DAG may have 100,000)."""
    by_action: dict[int, Any] = {}  # id(action) -> hasher; the specs keep the actions alive
    out = []
    for spec in specs:
        action = spec.action
        base = by_action.get(id(action))
        if base is None:
            base = by_action[id(action)] = hashlib.sha256(_action_key(action).encode())
        h = base.copy()
        h.update(repr(sorted(spec.depends_on)).encode())
        hash_optional_parts(h, spec)
        out.append(h.hexdigest()[:16])
    return out


def hash_optional_parts(h: Any, spec: TaskSpec) -> None:
    """Add to ``h`` what ``spec`` has beyond its action: each part tagged, and hashed only
    when present (the common task has no arguments, environment or cwd), so that adding a
    kind of part never changes the fingerprints of tasks without it."""
    if spec.args:
        h.update(f"|a{_stable(spec.args)!r}".encode())
    if spec.kwargs:
        h.update(f"|k{_stable(spec.kwargs)!r}".encode())
    if spec.env:
        h.update(f"|e{_stable(spec.env)!r}".encode())
    if spec.cwd is not None:
        h.update(f"|c{spec.cwd!r}".encode())
    if spec.executor is not None:
        h.update(f"|x{spec.executor}".encode())
    if spec.when is not None:
        h.update(f"|w{spec.when.text}|{_stable(spec.when.bound)!r}".encode())
    if spec.inputs_digest is not None:
        h.update(f"|i{spec.inputs_digest}".encode())
    if spec.for_each is not None:
        h.update(f"|f{spec.for_each}".encode())


def executor_names(specs: Sequence[TaskSpec]) -> list[str]:
    """:attr:`TaskSpec.executor_name` of each of ``specs``, asking each action once."""
    by_action: dict[int, str] = {}  # id(action) -> name, for tasks that leave it to the action
    out = []
    for spec in specs:
        name = spec.executor
        if name is None:
            name = by_action.get(id(spec.action))
            if name is None:
                name = by_action[id(spec.action)] = spec.executor_name
        out.append(name)
    return out


def _action_key(action: Any) -> str:
    if isinstance(action, ShellCommand | CallRef):
        return f"{type(action).__name__}:{action}"
    name = getattr(action, "__qualname__", repr(action))
    module = getattr(action, "__module__", "")
    code = getattr(action, "__code__", None)
    return f"py:{module}:{name}:{hash_code(code) if code else ''}"


def hash_code(code: Any) -> str:
    """A hash of a function's code (bytecode and constants), cached per code object: the
    thousands of tasks a DAG makes from one function share one hash."""
    cached = _code_hashes.get(code)
    if cached is None:
        h = hashlib.sha256(code.co_code)
        h.update(repr(code.co_consts).encode())
        cached = _code_hashes[code] = h.hexdigest()[:12]
    return cached


_code_hashes: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _stable(value: Any) -> Any:
    if isinstance(value, TaskRef):
        return f"<ref {value.id}>"
    if isinstance(value, Mapping):
        return {str(k): _stable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_stable(v) for v in value]
    return value


def refs_in(value: Any, out: list[str] | None = None) -> list[str]:
    """Ids of the tasks referenced in ``value``, in the order they appear."""
    out = [] if out is None else out
    if isinstance(value, TaskRef):
        if value.id not in out:
            out.append(value.id)
    elif isinstance(value, Mapping):
        for v in value.values():
            refs_in(v, out)
    elif isinstance(value, list | tuple):
        for v in value:
            refs_in(v, out)
    return out


def takes_values(spec: TaskSpec) -> bool:
    """Whether ``spec``'s arguments reference other tasks' values (found once per task, so
    that a dispatch substitutes only where there is something to substitute)."""
    return bool(spec.args or spec.kwargs) and bool(refs_in(spec.args) or refs_in(spec.kwargs))


def substitute_refs(value: Any, lookup: Callable[[str], Any]) -> Any:
    """``value`` with each :class:`TaskRef` in it replaced by ``lookup(ref.id)``."""
    if isinstance(value, TaskRef):
        return lookup(value.id)
    if isinstance(value, Mapping):
        return {k: substitute_refs(v, lookup) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(substitute_refs(v, lookup) for v in value)
    return value
