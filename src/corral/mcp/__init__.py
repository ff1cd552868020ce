"""corral as an MCP server: agents plan, run, watch and improve DAGs (``corral mcp``, and
``/mcp`` on ``corral serve``).

Needs the ``mcp`` extra (``pip install 'corral[mcp]'``): the official MCP SDK (2.x, whose
server class is ``MCPServer``) and the server extra's packages, since runs go through the
service's run manager. ``import corral`` never imports this package; importing it imports
neither the SDK nor FastAPI until an attribute below is used.

Modules: ``_server`` (tools, resources, prompts; who may call what), ``_answers`` (what
the tools answer, as models), ``_advice`` (suggestions and run analyses, pure), ``_errors``
(tool errors an agent can act on), ``_http`` (the streamable HTTP endpoint behind the
service's tokens), ``_cli`` (``corral mcp``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.mcp._server import build_server

__all__ = ["INSTALL_HINT", "build_server"]

INSTALL_HINT = "corral mcp needs the mcp extra: pip install 'corral[mcp]'"


def __getattr__(name: str) -> Any:
    if name != "build_server":
        raise AttributeError(f"module 'corral.mcp' has no attribute {name!r}")
    from corral.mcp._server import build_server

    return build_server
