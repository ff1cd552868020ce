"""``/mcp`` on ``corral serve``: the MCP server over streamable HTTP, behind the service's
tokens.

::

    POST/GET/DELETE /mcp ──> McpEndpoint: a viewer's token (or auth off), else 401/403
                              └─> the SDK's session manager ──> build_server(svc, TokenGate)
                                   (each tool call checks the call's token again for its role:
                                    viewers read, operators run, cancel and resume)

The session manager's task group lives as long as the app: :func:`mount` returns the context
manager the app's lifespan enters. With auth off the server listens on 127.0.0.1 only, and the
SDK's DNS-rebinding protection stays on (a web page cannot reach it through a name of its own);
with auth on, every request needs a token a browser would not send by itself.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from corral.server._auth import Role
from corral.server._errors import ApiError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from fastapi import FastAPI

    from corral.server._service import Service

    Scope = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

__all__ = ["PATH", "mount"]

PATH = "/mcp"


class McpEndpoint:
    """The ASGI endpoint: authenticate, then hand the request to the SDK."""

    def __init__(self, svc: Service, handle: Callable[[Scope, Receive, Send], Awaitable[None]]
                 ) -> None:
        self.svc = svc
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", ())}
        try:
            principal = self.svc.auth.authenticate(headers.get("authorization"))
            if principal.role < Role.VIEWER:
                raise ApiError(403, "forbidden", "this needs the viewer role; the token has "
                               "no role")
        except ApiError as exc:
            await _refuse(send, exc)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.handle(scope, receive, send)


async def _refuse(send: Send, exc: ApiError) -> None:
    body = json.dumps({"error": {"code": exc.code, "message": exc.message}}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def mount(app: FastAPI, svc: Service, *, allow_shell: bool) -> AbstractAsyncContextManager[None]:
    """Serve the MCP server at :data:`PATH` of ``app``; enter the returned context manager
    for as long as the app serves (its lifespan)."""
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.routing import Route

    from corral.mcp._server import TokenGate, build_server

    server = build_server(svc, gate=TokenGate(svc.auth), allow_shell=allow_shell)
    local = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=not svc.auth.enabled, allowed_hosts=local,
        allowed_origins=[f"http://{h}" for h in local])
    # Builds the session manager (the Starlette app it comes with is not used: the route
    # below is ours, behind the tokens).
    server.streamable_http_app(streamable_http_path=PATH, transport_security=security,
                               max_request_body_size=svc.settings.max_body_bytes)
    manager = server.session_manager
    app.router.routes.append(Route(PATH, endpoint=McpEndpoint(svc, manager.handle_request),
                                   methods=["GET", "POST", "DELETE"], include_in_schema=False))
    return manager.run()
