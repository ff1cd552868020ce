"""Tool errors an agent can act on: every failure a tool anticipates becomes one
:class:`~mcp.server.mcpserver.exceptions.ToolError` whose text is a JSON object::

    {"error": "invalid_pipeline", "message": "...", "field": "pipeline",
     "problems": [{"message": ..., "task": ..., "file": ..., "line": ..., "hint": ...}]}

``error`` is a stable code, ``field`` names the argument at fault, ``problems`` carry file
and line. Anything else a tool raises is the SDK's business: the model sees "Error executing
tool", the server logs the traceback, and the server lives on.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from mcp.server.mcpserver.exceptions import ToolError

from corral._errors import (
    BrokenStore,
    NotResumable,
    ParameterError,
    RunLocked,
    RunNotFound,
    ValidationError,
)

__all__ = ["Refused", "tool_errors"]

P = ParamSpec("P")
R = TypeVar("R")


class Refused(ToolError):
    """A tool call refused with a code, the argument at fault and the problems found."""

    def __init__(self, code: str, message: str, *, field: str | None = None,
                 problems: list[dict[str, object]] | None = None) -> None:
        body: dict[str, Any] = {"error": code, "message": message}
        if field is not None:
            body["field"] = field
        if problems is not None:
            body["problems"] = problems
        super().__init__(json.dumps(body))
        self.code = code
        self.body = body


def refusal(exc: BaseException) -> Refused | None:
    """The refusal that ``exc`` stands for, or None when it is not one we anticipate."""
    from corral.server._errors import ApiError

    if isinstance(exc, Refused):
        return exc
    if isinstance(exc, ValidationError):
        return Refused("invalid_pipeline", str(exc), field="pipeline",
                       problems=[p.as_dict() for p in exc.problems])
    if isinstance(exc, ParameterError):
        return Refused("invalid_params", str(exc), field="params")
    if isinstance(exc, RunNotFound):
        return Refused("unknown_run", str(exc), field="run_id")
    if isinstance(exc, NotResumable):
        return Refused("not_resumable", str(exc), field="run_id")
    if isinstance(exc, RunLocked):
        return Refused("run_running", str(exc), field="run_id")
    if isinstance(exc, ApiError):
        return Refused(exc.code, exc.message)
    if isinstance(exc, BrokenStore):
        return Refused("broken_store", str(exc))
    return None


def tool_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Run the tool ``fn``; turn the failures it anticipates into :class:`Refused`."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            refused = refusal(exc)
            if refused is None or refused is exc:
                raise
            raise refused from exc

    return wrapper
