"""Tool errors an agent can act on: every failure a tool anticipates becomes an error result
(``isError``) whose text, and structured content, is one JSON object::

    {"error": "invalid_pipeline", "message": "...", "field": "pipeline",
     "problems": [{"message": ..., "task": ..., "file": ..., "line": ..., "hint": ...}]}

``error`` is a stable code, ``field`` names the argument at fault, ``problems`` carry file
and line. (A ``ToolError`` raised out of a tool reaches the client as text behind the SDK's
"Error executing tool ..." prefix; a returned error result keeps the JSON whole.) Arguments
of the wrong type or missing are the SDK's to refuse: its message names the field. Anything
else a tool raises is the SDK's business: the model sees "Error executing
tool", the server logs the traceback, and the server lives on.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent

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
        # --only's unknown names are the only problems that are not the pipeline's.
        only = all(p.message.startswith("--only ") for p in exc.problems)
        return Refused("invalid_pipeline", str(exc), field="only" if only else "pipeline",
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
    """Run the tool ``fn``; answer the failures it anticipates with an error result (the SDK
    passes a returned ``CallToolResult`` through as it is, whatever ``fn`` is annotated to
    return)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            refused = refusal(exc)
            if refused is None:
                raise
            text = json.dumps(refused.body)
            return cast(R, CallToolResult(content=[TextContent(type="text", text=text)],
                                          structured_content=refused.body, is_error=True))

    return wrapper
