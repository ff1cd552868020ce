"""The API's error shape, and the one place exceptions become HTTP responses.

Every error, whoever raises it, leaves as the same JSON document::

    {"error": {"status": 422, "code": "invalid_pipeline", "message": "...",
               "problems": [{"message", "task", "file", "line", "hint"}, ...],
               "fields": [{"loc": ["body", "params"], "message", "type"}, ...],
               "request_id": "5f0c..."}}

``code`` is stable and meant for programs; ``message`` is for people. Policy:

- a client's mistake gets a 4xx naming what to change, never a traceback;
- :class:`~corral._errors.CorralError` kinds map to statuses here (:data:`_STATUS_OF`), so a
  route raises the engine's own errors and does not translate them itself;
- anything else is a bug: logged with its traceback and the request id, answered with a 500
  that says only that and the id.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from corral._errors import (
    BrokenBroker,
    BrokenStore,
    CorralError,
    CorruptHistory,
    ParameterError,
    RunLocked,
    RunNotFound,
    ValidationError,
)

__all__ = ["ApiError", "error_body", "install_error_handlers"]

log = logging.getLogger("corral.server")

# Codes for the statuses Starlette raises itself (unknown route, wrong method...).
_CODE_OF_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answered as ``status`` with the stable ``code``; for routes and dependencies."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        problems: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = problems or []
        self.headers = headers


def error_body(
    status: int,
    code: str,
    message: str,
    *,
    problems: list[dict[str, Any]] | None = None,
    fields: list[dict[str, Any]] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    return {"error": {"status": status, "code": code, "message": message,
                      "problems": problems or [], "fields": fields or [],
                      "request_id": request_id}}


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _respond(request: Request, status: int, code: str, message: str, *,
             problems: list[dict[str, Any]] | None = None,
             fields: list[dict[str, Any]] | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    body = error_body(status, code, message, problems=problems, fields=fields,
                      request_id=_request_id(request))
    return JSONResponse(body, status_code=status, headers=headers)


def _corral_error(exc: CorralError) -> tuple[int, str, list[dict[str, Any]]]:
    """Status, code and problems for an engine error."""
    if isinstance(exc, ValidationError):
        return 422, "invalid_pipeline", [p.as_dict() for p in exc.problems]
    if isinstance(exc, ParameterError):
        return 422, "invalid_parameter", [{"message": str(exc), "task": None, "file": None,
                                           "line": None, "hint": None}]
    if isinstance(exc, RunNotFound):
        return 404, "run_not_found", []
    if isinstance(exc, RunLocked):
        return 409, "run_locked", []
    if isinstance(exc, CorruptHistory):  # the store answers, but this run cannot be read
        return 409, "corrupt_history", []
    if isinstance(exc, BrokenStore):
        return 503, "store_unavailable", []
    if isinstance(exc, BrokenBroker):  # the run was not started
        return 503, "broker_unavailable", []
    return 500, "internal_error", []


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path, as the OpenAPI document lists them."""
    from starlette.routing import compile_path

    path = request.scope.get("path", "")
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(path):
            methods |= {m.upper() for m in operations}
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, raised anywhere under ``app``, leave in the shape above."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _respond(request, exc.status, exc.code, exc.message, problems=exc.problems,
                        headers=exc.headers)

    @app.exception_handler(CorralError)
    async def corral_error(request: Request, exc: CorralError) -> JSONResponse:
        status, code, problems = _corral_error(exc)
        message = str(exc)
        if status == 500:
            log.error("unexpected engine error", exc_info=exc,
                      extra={"action": "request_failed", "request_id": _request_id(request)})
            message = "internal error; the server log has the details"
        elif isinstance(exc, ValidationError):
            message = f"the pipeline is invalid: {len(exc.problems)} problem(s)"
        return _respond(request, status, code, message, problems=problems)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [{"loc": [str(p) for p in e.get("loc", ())], "message": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        if any(f["type"] == "json_invalid" for f in fields):
            return _respond(request, 400, "malformed_body", "the request body is not valid JSON",
                            fields=fields)
        first = fields[0] if fields else None
        where = ".".join(first["loc"]) if first else "request"
        message = f"{where}: {first['message']}" if first else "the request is invalid"
        return _respond(request, 422, "invalid_request", message, fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cause = exc.__cause__
        if isinstance(cause, ApiError):  # raised while FastAPI read the body (the size cap)
            return await api_error(request, cause)
        status = exc.status_code
        code = _CODE_OF_STATUS.get(status, "error" if status < 500 else "internal_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if status == 400 and isinstance(exc.__cause__, UnicodeDecodeError | ValueError):
            code, message = "malformed_body", "the request body is not valid UTF-8 JSON"
        headers = dict(exc.headers) if exc.headers else None
        if status == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif status == 405:
            # Starlette names only the first route of the path; list every route's methods.
            allowed = _allowed_methods(request)
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
            message = f"{request.method} is not allowed here; use {', '.join(allowed)}"
        return _respond(request, status, code, message, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc,
                  extra={"action": "request_failed", "request_id": _request_id(request)})
        return _respond(request, 500, "internal_error",
                        "internal error; the server log has the details")
