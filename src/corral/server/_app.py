"""The ASGI application: :func:`create_app` wires the store, the run manager, the event hub,
auth and metrics into one FastAPI app, and serves the web page.

::

    request ──> _Edge (request id, body cap, timing, metrics, access log)
            ──> FastAPI ──> /api/v1/*  (corral.server._api: role check, then store/runs/hub)
                        ──> /health, /ready, /health/orchestration, /metrics,
                            / and /static/* (the page), /docs
                        ──> /mcp   (corral.mcp._http: the MCP server, with the mcp extra)

Unauthenticated on purpose: ``/health`` and ``/ready`` (for orchestrators), ``/metrics`` with
``metrics_public``, and the page's static shell (``/``, ``/static/*``, ``/docs``,
``/openapi.json``), which hold no run data — the page asks for a token before it reads any.
``/health/orchestration`` is guarded as ``/metrics`` is (it names the broker and the store).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from corral import __version__
from corral.server._api import require, router
from corral.server._auth import Authenticator, Role
from corral.server._errors import ApiError, error_body, install_error_handlers
from corral.server._events import EventHub
from corral.server._metrics import CONTENT_TYPE_LATEST, Metrics
from corral.server._models import ErrorBody, Health, OrchestrationHealth, Ready
from corral.server._orchestration import Orchestration, OrchestrationCollector
from corral.server._runs import RunManager
from corral.server._service import Service
from corral.server._settings import Settings
from corral.store import Store

__all__ = ["Service", "create_app", "open_service"]

log = logging.getLogger("corral.server")
access = logging.getLogger("corral.server.access")

STATIC = Path(__file__).parent / "static"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The page runs only its own scripts and talks only to this server.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class _Edge:
    """The outermost layer: a request id, the body cap, metrics and one access-log line.

    A plain ASGI middleware (not BaseHTTPMiddleware) so that event streams pass through
    untouched, chunk by chunk.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", ())}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        method = scope.get("method", "")
        status = 500
        first_byte: float | None = None
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            await self._too_large(send, request_id)
            status = 413
            self._account(scope, method, status, time.perf_counter() - t0, request_id)
            return
        received = 0
        max_body = self.max_body

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    raise ApiError(413, "payload_too_large",
                                   f"the request body is larger than {max_body} bytes")
            return message

        async def tagged_send(message: Message) -> None:
            nonlocal status, first_byte
            if message["type"] == "http.response.start":
                status = int(message["status"])
                first_byte = time.perf_counter() - t0
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, capped_receive, tagged_send)
        finally:
            self._account(scope, method, status, first_byte if first_byte is not None
                          else time.perf_counter() - t0, request_id,
                          total=time.perf_counter() - t0)

    def _account(self, scope: Scope, method: str, status: int, duration: float,
                 request_id: str, total: float | None = None) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        m = self.metrics
        m.http_requests.labels(method, template, str(status)).inc()
        m.http_duration.labels(method, template).observe(duration)
        principal = getattr(scope.get("state", {}).get("principal"), "subject", None)
        level = logging.WARNING if status >= 500 else logging.INFO
        if access.isEnabledFor(level):
            access.log(level, "%s %s %s", method, scope.get("path", ""), status, extra={
                "action": "request", "request_id": request_id, "method": method,
                "path": scope.get("path", ""), "route": template, "status": status,
                "duration_ms": round((total if total is not None else duration) * 1000, 2),
                "principal": principal})

    async def _too_large(self, send: Send, request_id: str) -> None:
        import json

        body = json.dumps(error_body(413, "payload_too_large",
                                     f"the request body is larger than {self.max_body} bytes",
                                     request_id=request_id)).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode())]})
        await send({"type": "http.response.body", "body": body})


def open_service(settings: Settings, store: Store | None) -> Service:
    """What the routes (and the MCP server, also over stdio) share, made from ``settings``;
    ``store`` as given, else opened from ``settings.store_url``."""
    from corral.fleet._broker import open_broker
    from corral.store import open_store

    auth = Authenticator(settings.auth)  # raises AuthConfigError before anything is opened
    metrics = Metrics()
    hub = EventHub()
    hub.on_subscribers = metrics.event_subscribers.set
    # The server's own connection to the broker, for the health report; each run opens its
    # own. Opened first: an unreachable broker raises BrokenBroker before the store opens.
    broker = open_broker(settings.broker) if settings.broker else None
    try:
        if store is None:
            store = open_store(settings.store_url)
    except BaseException:
        if broker is not None:
            broker.close()
        raise
    metrics.instrument_store(store)
    runs = RunManager(store, hub, metrics, log_dir=settings.log_dir.absolute(),
                      pipelines_dir=settings.pipelines_dir.absolute(), broker=settings.broker)
    orchestration = Orchestration(runs, store, broker)
    metrics.registry.register(OrchestrationCollector(lambda: orchestration.last))
    return Service(settings, store, hub, metrics, runs, auth, orchestration)


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> FastAPI:
    """The server as an ASGI app. Opens the store (``settings.store_url``, or ``store`` as
    given) now; on shutdown, cancels the live runs, waits for them to record their end and
    closes the store (only if it opened it)."""
    settings = settings or Settings()
    owns_store = store is None
    svc = open_service(settings, store)
    # What lives as long as the app serves, besides the runs (the MCP session manager).
    serving: list[contextlib.AbstractAsyncContextManager[None]] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("server started", extra={
            "action": "server_started", "run_id": None, "task_id": None,
            "store": svc.store.url, "auth": "on" if svc.auth.enabled else "OFF",
            "broker": svc.orchestration.broker_url})
        try:
            async with contextlib.AsyncExitStack() as stack:
                for context in serving:
                    await stack.enter_async_context(context)
                yield
        finally:
            await svc.runs.shutdown()
            svc.hub.close()
            svc.orchestration.close()
            if owns_store:
                svc.store.close()
            log.info("server stopped", extra={"action": "server_stopped", "run_id": None,
                                              "task_id": None})

    app = FastAPI(
        title="corral",
        version=__version__,
        summary="Submit DAGs of tasks, watch them run, read their logs.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = svc
    install_error_handlers(app)
    app.include_router(router)
    _add_operations(app, svc)
    if settings.mcp and importlib.util.find_spec("mcp") is not None:
        from corral.mcp._http import mount

        serving.append(mount(app, svc, allow_shell=settings.mcp_allow_shell))
    _add_page(app)
    app.add_middleware(_Edge, metrics=svc.metrics, max_body=settings.max_body_bytes)
    return app


def _add_operations(app: FastAPI, svc: Service) -> None:
    @app.get("/health", response_model=Health, tags=["operations"])
    async def health() -> dict[str, Any]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/ready", response_model=Ready, tags=["operations"],
             responses={503: {"model": Ready, "description": "Not ready: see store."}})
    async def ready() -> Any:
        """The store answers and new runs are accepted."""
        problem = "ok"
        try:
            await anyio.to_thread.run_sync(lambda: svc.store.list_runs(limit=1))
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        ok = problem == "ok" and svc.runs.accepting
        body = {"status": "ready" if ok else "unavailable", "store": problem,
                "accepting": svc.runs.accepting, "live_runs": len(svc.runs.live_ids())}
        return body if ok else JSONResponse(body, status_code=503)

    metrics_deps = [] if svc.settings.metrics_public else [Depends(require(Role.VIEWER))]
    auth_answers: dict[int | str, dict[str, Any]] = {} if svc.settings.metrics_public else {
        401: {"model": ErrorBody, "description": "No valid token."},
        403: {"model": ErrorBody, "description": "The token has no role."}}

    @app.get("/health/orchestration", response_model=OrchestrationHealth, tags=["operations"],
             dependencies=metrics_deps, responses={
                 503: {"model": OrchestrationHealth,
                       "description": "Unavailable: the broker cannot be read, or the server "
                       "is shutting down."}, **auth_answers})
    async def orchestration() -> Any:
        """The coordinator, the fleet's pools and the store's connection pool (guarded as
        /metrics is: a viewer token unless the server serves metrics publicly)."""
        body = await svc.orchestration.report()
        return body if body["status"] != "unavailable" else JSONResponse(body, status_code=503)

    @app.get("/metrics", tags=["operations"], dependencies=metrics_deps,
             response_class=Response, responses={
                 200: {"description": "Prometheus text format.",
                       "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
                 **auth_answers})
    async def metrics() -> Response:
        """Prometheus metrics (needs a viewer token unless the server serves them publicly)."""
        await svc.orchestration.report()  # the fleet's and the store pool's gauges, fresh
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _add_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)

    class _Static(StaticFiles):
        async def get_response(self, path: str, scope: Scope) -> Response:
            response = await super().get_response(path, scope)
            response.headers.update(_PAGE_HEADERS)
            return response

    app.mount("/static", _Static(directory=STATIC), name="static")
    _add_docs(app)


def _add_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI over ``/openapi.json`` (OpenAPI 3.1). Its assets are vendored in
    ``static/swagger-ui`` (swagger-ui-dist 5, see the ``VERSION`` file there): served by this
    process, no CDN, so the docs work without internet access and under the page's
    Content-Security-Policy (the page's script is a file, not inline). Swagger UI sets some
    ``style`` attributes, so this page alone allows inline styles."""
    headers = {**_PAGE_HEADERS, "Content-Security-Policy": _PAGE_HEADERS[
        "Content-Security-Policy"].replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return FileResponse(STATIC / "docs.html", media_type="text/html", headers=headers)
