"""The ``/api/v1`` routes. Each checks the caller's role, calls the store, the run manager or
the planner, and returns a dict shaped like its response model; errors are raised, and
:mod:`corral.server._errors` turns them into the one error shape.

Store calls are blocking: they run in worker threads (``anyio.to_thread``), never on the loop
the runs use.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPBearer

from corral._errors import ParameterError, Problem, ValidationError
from corral.server._auth import Principal, Role
from corral.server._errors import ApiError
from corral.server._events import all_stream, run_stream
from corral.server._models import (
    CancelResponse,
    ErrorBody,
    LogResponse,
    PipelineRequest,
    PlanRequest,
    PlanResponse,
    PruneRequest,
    PruneResponse,
    ResumeResponse,
    RunDetail,
    RunList,
    RunStatus,
    SubmitRequest,
    SubmitResponse,
    ValidateResponse,
    WhoAmI,
)
from corral.server._runs import Submission
from corral.server._views import finished_data, run_detail, run_summary

if TYPE_CHECKING:
    from corral._graph import Graph
    from corral.server._service import Service
    from corral.store import StoredRun

__all__ = ["require", "router"]

PREFIX = "/api/v1"

# Declares the scheme in /openapi.json (the "Authorize" button of /docs); the check is ours.
bearer = HTTPBearer(auto_error=False, description="A JWT or a static API token.")


def service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, authenticated, holding at least ``role`` (else 401/403)."""

    async def check(request: Request, _: Annotated[Any, Depends(bearer)]) -> Principal:
        principal = service(request).auth.authenticate(request.headers.get("authorization"))
        if principal.role < role:
            raise ApiError(403, "forbidden", f"this needs the {role} role; the token has "
                           f"{principal.role if principal.role else 'no role'}")
        request.state.principal = principal
        return principal

    return check


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "The request is malformed (a body that is not JSON, a bad event id).",
        401: "No valid token: missing, malformed, expired, wrongly signed or not accepted.",
        403: "The token's role may not do this.",
        404: "No such run, task or attempt.",
        409: "The run's state does not allow this (resume a running run, cancel a finished "
             "one), or its stored history cannot be read (code corrupt_history).",
        422: "The pipeline or the request is invalid; problems carry file and line.",
        503: "The store (or the fleet's broker) is unreachable, or the server is shutting down.",
    }
    return {s: {"model": ErrorBody, "description": described[s]} for s in statuses}


AUTHED = (400, 401, 403, 422, 503)
router = APIRouter(prefix=PREFIX)

Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
Anyone = Annotated[Principal, Depends(require(Role.NONE))]
RunId = Annotated[str, PathParam(max_length=200, description="A run id.")]


# ---------------------------------------------------------------------------- who am I


@router.get("/whoami", response_model=WhoAmI, responses=_errors(401, 503), tags=["auth"])
async def whoami(request: Request, principal: Anyone) -> dict[str, Any]:
    """The caller, as the token says."""
    return {"subject": principal.subject, "role": str(principal.role), "via": principal.via,
            "auth_enabled": service(request).auth.enabled}


# ---------------------------------------------------------------------------- pipelines


def _text(req: PipelineRequest) -> tuple[str, str | None]:
    if isinstance(req.pipeline, dict):
        return json.dumps(req.pipeline), "json"
    return req.pipeline, req.format


def _graph_of(req: PipelineRequest) -> tuple[Graph, int | None]:
    from corral._pipeline import parse_pipeline

    text, fmt = _text(req)
    # A viewer may validate and plan: their call: targets are found, never imported, so no
    # module's code runs on the server's behalf (submitting a run, an operator's right, does).
    pipeline = parse_pipeline(text, file=req.file, fmt=fmt, params=req.params,
                              check_calls="find")
    return pipeline.dag.validate(only=req.only or None), pipeline.concurrency


@router.post("/validate", response_model=ValidateResponse, responses=_errors(*AUTHED),
             tags=["pipelines"])
async def validate(req: PipelineRequest, _: Viewer) -> dict[str, Any]:
    """Check a pipeline: every problem, each with its file and line where known.

    Answers 200 whether or not the pipeline is valid; ``valid`` says which.
    """

    def check() -> dict[str, Any]:
        problems: list[Problem] = []
        n_tasks = n_edges = 0
        try:
            graph, _ = _graph_of(req)
            n_tasks, n_edges = len(graph), sum(len(d) for d in graph.deps)
        except ValidationError as exc:
            problems = list(exc.problems)
        except ParameterError as exc:
            problems = [Problem(str(exc), file=req.file)]
        return {"valid": not problems, "problems": [p.as_dict() for p in problems],
                "n_tasks": n_tasks, "n_edges": n_edges}

    return await anyio.to_thread.run_sync(check)


@router.post("/plan", response_model=PlanResponse, responses=_errors(*AUTHED),
             tags=["pipelines"])
async def plan(req: PlanRequest, _: Viewer) -> dict[str, Any]:
    """Levels, width, critical path, total work and the makespan lower bound, without running.

    Durations are the tasks' ``estimate`` options (1 s where unset).
    """
    from corral._plan import make_plan
    from corral._runner import default_concurrency

    def compute() -> dict[str, Any]:
        graph, file_width = _graph_of(req)
        workers = req.workers or file_width or default_concurrency()
        return make_plan(graph, workers=workers).as_dict()

    return await anyio.to_thread.run_sync(compute)


# ---------------------------------------------------------------------------- runs


@router.post("/runs", status_code=202, response_model=SubmitResponse,
             responses=_errors(*AUTHED), tags=["runs"])
async def submit(req: SubmitRequest, request: Request, _: Operator) -> dict[str, Any]:
    """Start a run of a pipeline; answers with its id as soon as the store has the run."""
    text, fmt = _text(req)
    run_id = await service(request).runs.submit(Submission(
        text=text, fmt=fmt, file=req.file, params=dict(req.params), only=tuple(req.only),
        concurrency=req.concurrency, fail_fast=req.fail_fast))
    return {"run_id": run_id, "status": "running", "url": f"{PREFIX}/runs/{run_id}",
            "events_url": f"{PREFIX}/runs/{run_id}/events"}


@router.get("/runs", response_model=RunList, responses=_errors(409, *AUTHED), tags=["runs"])
async def list_runs(
    request: Request,
    _: Viewer,
    status: Annotated[RunStatus | None, Query(description="Only runs in this status.")] = None,
    pipeline: Annotated[str | None, Query(max_length=500,
                                          description="Only runs of this pipeline.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> dict[str, Any]:
    """Runs, newest first, a page at a time."""
    svc = service(request)
    rows = await anyio.to_thread.run_sync(
        lambda: svc.store.list_runs(status=status, pipeline=pipeline, limit=offset + limit + 1))
    page = rows[offset:offset + limit]
    more = len(rows) > offset + limit
    return {"runs": [run_summary(r, live_here=svc.runs.is_live(r.id)) for r in page],
            "limit": limit, "offset": offset, "next_offset": offset + limit if more else None}


async def _load(request: Request, run_id: str) -> StoredRun:
    store = service(request).store
    stored: StoredRun = await anyio.to_thread.run_sync(store.load_run, run_id)
    return stored


@router.get("/runs/{run_id}", response_model=RunDetail, responses=_errors(404, 409, *AUTHED),
            tags=["runs"])
async def get_run(run_id: RunId, request: Request, _: Viewer) -> dict[str, Any]:
    """A run with every task: state, attempts and timings, dependencies (to draw the DAG)."""
    svc = service(request)

    def read() -> dict[str, Any]:
        stored = svc.store.load_run(run_id)
        return run_detail(stored, svc.store.events(run_id), live_here=svc.runs.is_live(run_id))

    return await anyio.to_thread.run_sync(read)


@router.post("/runs/{run_id}/cancel", status_code=202, response_model=CancelResponse,
             responses=_errors(404, 409, *AUTHED), tags=["runs"])
async def cancel(run_id: RunId, request: Request, _: Operator) -> dict[str, Any]:
    """Stop a run executing in this server: running tasks are cancelled, nothing new starts."""
    svc = service(request)
    if svc.runs.cancel(run_id):
        return {"run_id": run_id, "status": "cancelling"}
    run = await anyio.to_thread.run_sync(svc.store.get_run, run_id)
    if run.finished_at is not None:
        raise ApiError(409, "run_finished", f"run {run_id!r} already ended ({run.status})")
    if run.lease_live:
        raise ApiError(409, "run_elsewhere", f"run {run_id!r} is executing in another process "
                       f"({run.lease_owner}): stop it there")
    raise ApiError(409, "run_not_live", f"run {run_id!r} never recorded an end and nobody "
                   "executes it (it crashed): resume it instead")


@router.post("/runs/{run_id}/resume", status_code=202, response_model=ResumeResponse,
             responses=_errors(404, 409, *AUTHED), tags=["runs"])
async def resume(run_id: RunId, request: Request, _: Operator) -> dict[str, Any]:
    """Finish an unfinished run in a new run, reusing every task that already succeeded."""
    new_id, plan = await service(request).runs.resume(run_id)
    return {"run_id": new_id, "resumed_from": run_id, "reused": list(plan.reuse),
            "rerun": dict(plan.rerun), "url": f"{PREFIX}/runs/{new_id}"}


# ---------------------------------------------------------------------------- logs


def _read_log(path: Path, *, tail: int | None, offset: int | None,
              limit: int) -> tuple[str, int, int, int, bool]:
    """(text, size, start, next_offset, truncated) of a slice of the log at ``path``."""
    try:
        size = path.stat().st_size
    except OSError:
        return "", 0, 0, 0, False
    start = min(offset, size) if offset is not None else max(0, size - limit)
    with path.open("rb") as f:
        f.seek(start)
        data = f.read(limit)
    end = start + len(data)
    if offset is None and tail is not None:
        lines = data.splitlines(keepends=True)
        if start > 0 and lines:
            lines = lines[1:]  # the first line is cut: drop it
        kept = lines[-tail:] if tail else []
        data = b"".join(kept)
        start = end - len(data)
    truncated = start > 0 or end < size
    return data.decode("utf-8", errors="replace"), size, start, end, truncated


@router.get("/runs/{run_id}/tasks/{task_id:path}/log", response_model=LogResponse,
            responses=_errors(404, 409, *AUTHED), tags=["runs"])
async def task_log(
    run_id: RunId,
    task_id: Annotated[str, PathParam(max_length=500)],
    request: Request,
    _: Viewer,
    attempt: Annotated[int | None, Query(ge=1, le=1_000_000,
                                         description="Which attempt (default: the last).")] = None,
    tail: Annotated[int | None, Query(ge=0, le=100_000,
                                      description="Only the last N lines.")] = None,
    offset: Annotated[int | None, Query(ge=0, le=2**53,
                                        description="Read from this byte on.")] = None,
    limit: Annotated[int, Query(ge=1, le=4 * 1024 * 1024,
                                description="At most this many bytes.")] = 256 * 1024,
) -> dict[str, Any]:
    """A task attempt's output, with its error and traceback (``has_log`` is false for a
    thread or async attempt that printed nothing).

    Without ``offset`` the end of the log is returned (the last ``limit`` bytes, or the last
    ``tail`` lines of them); with it, ``limit`` bytes from there: poll with
    ``offset=next_offset`` to follow a running task.
    """
    stored = await _load(request, run_id)
    if task_id not in stored.tasks:
        raise ApiError(404, "task_not_found", f"run {run_id!r} has no task {task_id!r}")
    mine = [t for t in stored.transitions if t.task_id == task_id]
    attempts = sorted({t.attempt for t in mine if str(t.state) == "running"})
    n = attempt if attempt is not None else (attempts[-1] if attempts else 0)
    if attempt is not None and attempt not in attempts:
        raise ApiError(404, "attempt_not_found",
                       f"task {task_id!r} of run {run_id!r} has no attempt {attempt}")
    of_attempt = [t for t in mine if t.attempt == n]
    log_path = next((t.log_path for t in of_attempt if t.log_path), None)
    failed = next((t for t in reversed(of_attempt) if t.error or t.traceback), None)
    text, size, start, end, truncated = "", 0, 0, 0, False
    # A thread or async attempt's log is made on its first write: one that printed nothing
    # has a path but no file.
    path = Path(log_path) if log_path is not None else None
    has_log = path is not None and await anyio.to_thread.run_sync(path.exists)
    if path is not None and has_log:
        text, size, start, end, truncated = await anyio.to_thread.run_sync(
            lambda: _read_log(path, tail=tail, offset=offset, limit=limit))
    return {"run_id": run_id, "task": task_id, "attempt": n, "attempts": attempts,
            "has_log": has_log, "text": text, "size": size, "offset": start,
            "next_offset": end, "truncated": truncated,
            "error": failed.error if failed else None,
            "traceback": failed.traceback if failed else None}


# ---------------------------------------------------------------------------- events

_SSE: dict[int | str, dict[str, Any]] = {200: {
    "description": "A Server-Sent Events stream (text/event-stream).",
    "content": {"text/event-stream": {"schema": {"type": "string"}}}}}
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get("/runs/{run_id}/events", response_class=StreamingResponse,
            responses={**_SSE, **_errors(404, 409, *AUTHED)}, tags=["events"])
async def run_events(
    run_id: RunId,
    request: Request,
    _: Viewer,
    after: Annotated[int | None, Query(ge=0, le=2**53, description="Send the transitions "
                                       "after this event id (as Last-Event-ID does).")] = None,
    last_event_id: Annotated[str | None, Header(max_length=100)] = None,
) -> StreamingResponse:
    """Every state transition of a run as it happens, then ``end``; the stream closes after.

    Transition ids are their ordinal in the run: reconnect with ``Last-Event-ID`` (or
    ``?after=``) to receive exactly what you missed, whether the run is live or long over.
    """
    svc = service(request)
    position = after
    if position is None and last_event_id:
        if not last_event_id.strip().isdigit():
            raise ApiError(400, "bad_event_id", f"Last-Event-ID {last_event_id!r} is not an "
                           "event id of this stream (a whole number)")
        position = int(last_event_id)
    stored = None
    if not svc.hub.is_live(run_id):
        stored = await _load(request, run_id)  # 404 now, before the stream starts

    async def reload() -> StoredRun:
        return await _load(request, run_id)

    async def finished(stored: StoredRun) -> dict[str, Any]:
        events = await anyio.to_thread.run_sync(lambda: svc.store.events(run_id))
        return finished_data(stored, events)

    stream = run_stream(svc.hub, run_id, position or 0, stored=stored, reload=reload,
                        finished=finished,
                        keepalive=svc.settings.keepalive_interval,
                        poll=svc.settings.poll_interval)
    return StreamingResponse(stream, media_type="text/event-stream", headers=_SSE_HEADERS)


@router.get("/events", response_class=StreamingResponse, responses={**_SSE, **_errors(*AUTHED)},
            tags=["events"])
async def events(
    request: Request,
    _: Viewer,
    last_event_id: Annotated[str | None, Header(max_length=100)] = None,
) -> StreamingResponse:
    """Every run's events (``run`` when one starts, ``transition``, ``end``), as they happen.

    Ids are ``<epoch>-<n>``; reconnecting with ``Last-Event-ID`` replays what was missed while
    this server process holds it, else sends ``reset`` (reload what you show).
    """
    svc = service(request)
    stream = all_stream(svc.hub, last_event_id, keepalive=svc.settings.keepalive_interval)
    return StreamingResponse(stream, media_type="text/event-stream", headers=_SSE_HEADERS)


# ---------------------------------------------------------------------------- admin


@router.post("/admin/prune", response_model=PruneResponse, responses=_errors(*AUTHED),
             tags=["admin"])
async def prune(req: PruneRequest, request: Request, _: Admin) -> dict[str, Any]:
    """Delete runs that ended more than ``older_than_s`` seconds ago, with their values."""
    store = service(request).store
    pruned = await anyio.to_thread.run_sync(store.prune, req.older_than_s)
    return {"pruned": pruned}

