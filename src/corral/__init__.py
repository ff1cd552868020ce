"""corral: define a DAG of tasks, validate it, plan it, and run it as fast as the machine allows.

Public API (everything else is private and may move)::

    DAG, Task, TaskFunction     build a DAG in Python
    load_pipeline               read a YAML/JSON pipeline file into a DAG
    RunResult, TaskResult       what a run produced
    TaskState, RunStatus        task and run lifecycles
    CorralError, ValidationError, Skip   errors (corral.errors has them all, and the tree)
    heartbeat                   a running task says "still alive" (the heartbeat option)
    limit                       a task waits for one of its run's rate limits: with limit("api")
    context                     the run's shared key-value context: context()["plan"] = [...]
    Plan                        what a planner task returns: new tasks that join the run
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

from corral._errors import CorralError, Skip, ValidationError
from corral._heartbeat import heartbeat  # tiny: one context variable
from corral._lazy import lazy_attributes as _lazy_attributes

if _TYPE_CHECKING:
    from corral._context import context
    from corral._dag import DAG, Task, TaskFunction
    from corral._pipeline import load_pipeline
    from corral._planner import Plan
    from corral._result import RunResult, RunStatus, TaskResult
    from corral._spec import TaskState
    from corral._throttle import limit

__all__ = [
    "DAG",
    "CorralError",
    "Plan",
    "RunResult",
    "RunStatus",
    "Skip",
    "Task",
    "TaskFunction",
    "TaskResult",
    "TaskState",
    "ValidationError",
    "__version__",
    "context",
    "heartbeat",
    "limit",
    "load_pipeline",
]

__version__ = "0.1.0"


# Imported when first used, so that ``import corral`` (which every ``corral.*`` import does
# first) is light: the console script installs its signal handlers before asyncio, pydantic
# or YAML load (corral._console), and the pipeline loader's YAML and pydantic are paid for
# only by those who read pipeline files.
_LAZY = {
    "DAG": "corral._dag",
    "Task": "corral._dag",
    "TaskFunction": "corral._dag",
    "RunResult": "corral._result",
    "RunStatus": "corral._result",
    "TaskResult": "corral._result",
    "TaskState": "corral._spec",
    "load_pipeline": "corral._pipeline",
    "limit": "corral._throttle",
    "context": "corral._context",
    "Plan": "corral._planner",
}


# once each: later lookups are plain attribute reads
__getattr__ = _lazy_attributes("corral", _LAZY, cache=globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
