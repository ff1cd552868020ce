"""corral as a service: an HTTP API, live events, metrics and a web page (``corral serve``).

Needs the ``server`` extra (``pip install 'corral[server]'``): FastAPI, uvicorn, PyJWT and
prometheus-client. ``import corral`` never imports this package; importing this package
imports none of them until an attribute below is used.

::

    from corral.server import Settings, AuthSettings, create_app
    app = create_app(Settings(store_url="sqlite:///runs.db",
                              auth=AuthSettings(jwt_secret="...")))   # any ASGI server

Modules: ``_app`` (the app and its edge middleware), ``_api`` (routes), ``_auth`` (tokens and
roles), ``_events`` (the event hub and SSE streams), ``_runs`` (runs in the server's loop),
``_metrics``, ``_orchestration`` (``/health/orchestration``), ``_logs``, ``_views`` (stored
runs as JSON), ``_models`` (the OpenAPI shapes), ``_errors`` (the error shape), ``_cli``
(``corral serve`` and ``corral token``); the web page is ``static/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.server._app import create_app
    from corral.server._settings import AuthSettings, Settings

__all__ = ["AuthSettings", "Settings", "create_app"]

_LAZY = {
    "AuthSettings": "corral.server._settings",
    "Settings": "corral.server._settings",
    "create_app": "corral.server._app",
}

INSTALL_HINT = "corral serve needs the server extra: pip install 'corral[server]'"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'corral.server' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
