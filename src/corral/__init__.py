"""corral: define a DAG of tasks, validate it, plan it, and run it as fast as the machine allows.

Public API (everything else is private and may move)::

    DAG, Task, TaskFunction     build a DAG in Python
    load_pipeline               read a YAML/JSON pipeline file into a DAG
    RunResult, TaskResult       what a run produced
    TaskState, RunStatus        task and run lifecycles
    CorralError, ValidationError, Skip   errors (corral.errors has them all, and the tree)
    heartbeat                   a running task says "still alive" (the heartbeat option)
    limit                       a task waits for one of its run's rate limits: with limit("api")
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from corral._dag import DAG, Task, TaskFunction
from corral._errors import CorralError, Skip, ValidationError
from corral._heartbeat import heartbeat  # tiny: one context variable
from corral._result import RunResult, RunStatus, TaskResult
from corral._spec import TaskState
from corral._throttle import limit

if _TYPE_CHECKING:
    from corral._pipeline import load_pipeline

__all__ = [
    "DAG",
    "CorralError",
    "RunResult",
    "RunStatus",
    "Skip",
    "Task",
    "TaskFunction",
    "TaskResult",
    "TaskState",
    "ValidationError",
    "__version__",
    "heartbeat",
    "limit",
    "load_pipeline",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> _Any:
    # The pipeline loader pulls in YAML and pydantic: only when asked for.
    if name == "load_pipeline":
        from corral._pipeline import load_pipeline

        return load_pipeline
    raise AttributeError(f"module 'corral' has no attribute {name!r}")
