"""``corral mcp``: the MCP server over stdio, for a client that starts it (Claude Desktop, an
IDE, an agent framework). Registered lazily by the main CLI; imports only click until it runs.

stdout belongs to the protocol: nothing else is printed there, and the server's own log lines
go to stderr. The server runs as the user who started it: every tool is allowed, shell
pipelines too unless ``--no-allow-shell``.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["mcp"]


def _need_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import mcp.server.mcpserver  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        from corral.cli._exits import UserError
        from corral.mcp import INSTALL_HINT

        raise UserError(f"{INSTALL_HINT} ({exc.name} is missing)") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--store", "store_url", envvar="CORRAL_STORE", show_envvar=True, default=None,
              help="Store URL: sqlite:///path or postgresql://...  "
              "[default: sqlite:///.corral/corral.db]")
@click.option("--log-dir", envvar="CORRAL_LOG_DIR", show_envvar=True, default=".corral/logs",
              type=click.Path(file_okay=False), help="Where task logs go (one directory per run).")
@click.option("--allow-shell/--no-allow-shell", envvar="CORRAL_MCP_ALLOW_SHELL",
              show_envvar=True, default=True,
              help="Run pipelines whose tasks are shell commands (the agent runs commands as "
              "you).")
@click.option("--path", "paths", envvar="CORRAL_PATH", show_envvar=True, multiple=True,
              type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="Also look for call: modules in DIR, after sys.path (repeatable).")
@click.option("--log-level", envvar="CORRAL_LOG_LEVEL", show_envvar=True, default="warning",
              type=click.Choice(["debug", "info", "warning", "error"]),
              help="Least severe server log line written to stderr.")
def mcp(store_url: str | None, log_dir: str, allow_shell: bool, paths: tuple[str, ...],
        log_level: str) -> None:
    """Serve corral's MCP tools over stdio (for an MCP client to start)."""
    _need_extra()
    import anyio

    from corral._imports import add_to_sys_path
    from corral.cli._options import open_run_store
    from corral.mcp._server import build_server
    from corral.server._app import open_service
    from corral.server._logs import configure_logging
    from corral.server._settings import Settings

    configure_logging(fmt="json", level=log_level)
    add_to_sys_path(paths)
    # As for every command: a URL that is no store exits 2, a store that cannot be opened 3.
    store = open_run_store(store_url, create=True)
    assert store is not None
    svc = open_service(Settings(store_url=store.url, log_dir=Path(log_dir)), store)

    async def serve() -> None:
        server = build_server(svc, allow_shell=allow_shell)
        try:
            await server.run_stdio_async()
        finally:
            await svc.runs.shutdown()
            svc.hub.close()
            svc.store.close()

    anyio.run(serve)
