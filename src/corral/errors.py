"""corral's exceptions: import them from here.

Three kinds of failure are kept apart, so that a caller can tell who has to act:

- *your input is wrong* — a ``ValueError`` subclass, carrying what a person needs to fix it;
- *the machinery is broken* — a ``Broken*`` error (an executor or store that stopped working);
- *a task failed* — the task's own exception, with its original type; a traceback from
  another process is attached as ``__cause__``.

::

    CorralError
    ├── ValidationError (ValueError)        the DAG or pipeline is invalid; .problems lists all
    │   └── PipelineError                   a pipeline file could not be read or parsed
    ├── ParameterError (ValueError)         a -p key=value is malformed or unknown
    ├── ConfigError (ValueError)            a configuration file or variable is invalid
    │   └── StartRefused                    settings ask for more than the machine or database has
    ├── ExpressionError (ValueError)        a ${{ ... }} is malformed or cannot be evaluated
    ├── CallNotFound (ImportError, ValueError)  a call's module or function cannot be found
    ├── InvalidTransition (RuntimeError)    a driver broke the scheduler's protocol
    ├── BrokenExecutor (RuntimeError)       an executor cannot run tasks any more
    │   └── WorkerCrashed                   the process running a task died
    ├── BrokenBroker (RuntimeError)         the fleet's broker (Redis, PostgreSQL) cannot be used
    ├── TaskTimeout (TimeoutError)          a task ran past its timeout
    ├── TaskHung (TimeoutError)             a task showed no sign of life for its heartbeat
    ├── CommandFailed                       a shell task exited with a non-zero code
    ├── CircuitOpen (RuntimeError)          the task's circuit breaker was open: it did not run
    ├── ForEachError (ValueError)           a for_each upstream returned no list: the task fails
    ├── PlanError (ValueError)              a planner's plan cannot join the run: the planner fails
    ├── Skip                                raised by a task to end as "skipped"
    ├── BrokenStore (RuntimeError)          the run store cannot be read or written; names its URL
    │   ├── StoreTooNew                     the store was written by a newer corral (schema version)
    │   └── CorruptHistory                  a stored run is unreadable or breaks the state machine
    ├── RunLocked (RuntimeError)            another live process holds the run's lease
    ├── RunNotFound (ValueError)            no run with that id in the store
    └── NotResumable (ValueError)           the run succeeded, or was already resumed

Each class's docstring is its default message.

``Problem`` is not an exception: one located problem of a :class:`ValidationError`.
"""

from __future__ import annotations

from corral._errors import (
    BrokenBroker,
    BrokenExecutor,
    BrokenStore,
    CallNotFound,
    CircuitOpen,
    CommandFailed,
    ConfigError,
    CorralError,
    CorruptHistory,
    ExpressionError,
    ForEachError,
    InvalidTransition,
    NotResumable,
    ParameterError,
    PipelineError,
    PlanError,
    Problem,
    RunLocked,
    RunNotFound,
    Skip,
    StartRefused,
    StoreTooNew,
    TaskHung,
    TaskTimeout,
    ValidationError,
    WorkerCrashed,
)

__all__ = [
    "BrokenBroker",
    "BrokenExecutor",
    "BrokenStore",
    "CallNotFound",
    "CircuitOpen",
    "CommandFailed",
    "ConfigError",
    "CorralError",
    "CorruptHistory",
    "ExpressionError",
    "ForEachError",
    "InvalidTransition",
    "NotResumable",
    "ParameterError",
    "PipelineError",
    "PlanError",
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
