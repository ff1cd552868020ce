"""``corral serve`` and ``corral token``: the service's command line.

Registered lazily by the main CLI (``register_command("serve", "corral.server._cli:serve")``),
so this module imports only click; FastAPI and uvicorn load when the server starts, with an
install hint when the ``server`` extra is missing. Every option has a ``CORRAL_*`` variable.

Without any auth configured, ``serve`` binds to 127.0.0.1 whatever ``--host`` says, and says so
loudly: an unauthenticated server runs commands for whoever can reach it.

Also runnable as ``python -m corral.server._cli serve|token ...``.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["parse_ttl", "serve", "token"]

DEFAULT_PORT = 8470
_CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True,
            "max_content_width": 100}
_ROLES = ["viewer", "operator", "admin"]


def _need_extra(command: str) -> None:
    """Exit 2 (as for any missing input), naming the extra, unless it is installed."""
    try:
        import fastapi  # noqa: F401
        import jwt  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        from corral.cli._exits import UserError
        from corral.server import INSTALL_HINT

        hint = INSTALL_HINT.replace("corral serve", f"corral {command}")
        raise UserError(f"{hint} ({exc.name} is missing)") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_TTL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_ttl(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``7d``, ``2w`` or plain seconds, as a timedelta."""
    match = _TTL.match(text)
    if not match or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration like 30m, 1h, 7d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


class _Ttl(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_ttl(str(value))
        except click.BadParameter as exc:
            self.fail(str(exc.message), param, ctx)


def _opt(*names: str, env: str, **kwargs: Any) -> Callable[[F], F]:
    decorator: Callable[[F], F] = click.option(*names, envvar=env, show_envvar=True, **kwargs)
    return decorator


_secret_option = _opt("--jwt-secret", env="CORRAL_JWT_SECRET", default=None,
                      help="Accept HS256 JWTs signed with this secret (at least 32 bytes).")
_issuer_option = _opt("--jwt-issuer", env="CORRAL_JWT_ISSUER", default=None,
                      help="Require this 'iss' claim in JWTs.")
_audience_option = _opt("--jwt-audience", env="CORRAL_JWT_AUDIENCE", default=None,
                        help="Require this 'aud' claim in JWTs.")
_tokens_option = _opt("--api-tokens-file", env="CORRAL_API_TOKENS_FILE", default=None,
                      type=click.Path(dir_okay=False),
                      help="Static API tokens: lines of 'sha256:<hex> <role> [name]'.")


@click.command(context_settings=_CONTEXT)
@_opt("--host", env="CORRAL_HOST", default="127.0.0.1",
      help="Address to listen on (127.0.0.1 whatever this says when auth is off).")
@_opt("--port", env="CORRAL_PORT", default=DEFAULT_PORT, type=click.IntRange(0, 65535),
      help="Port to listen on.")
@_opt("--store", "store_url", env="CORRAL_STORE", default=None,
      help="Store URL: sqlite:///path or postgresql://...  [default: sqlite:///.corral/corral.db]")
@_secret_option
@_opt("--jwt-public-key", env="CORRAL_JWT_PUBLIC_KEY", default=None,
      help="Accept RS256/ES256 JWTs verified by this PEM public key (a file, or the PEM text).")
@_opt("--jwks-file", env="CORRAL_JWKS_FILE", default=None, type=click.Path(dir_okay=False),
      help="Accept RS256/ES256 JWTs verified by the keys of this JWKS file (picked by kid).")
@_issuer_option
@_audience_option
@_tokens_option
@_opt("--metrics-public/--metrics-private", env="CORRAL_METRICS_PUBLIC", default=False,
      help="Serve /metrics without a token.")
@_opt("--log-dir", env="CORRAL_LOG_DIR", default=".corral/logs", type=click.Path(file_okay=False),
      help="Where task logs go (one directory per run).")
@_opt("--log-format", env="CORRAL_LOG_FORMAT", default="auto",
      type=click.Choice(["auto", "json", "text"]),
      help="Server log lines: JSON, text, or auto (text on a terminal, else JSON).")
@_opt("--log-level", env="CORRAL_LOG_LEVEL", default="info",
      type=click.Choice(["debug", "info", "warning", "error"]), help="Least severe level logged.")
@_opt("--path", "paths", env="CORRAL_PATH", multiple=True,
      type=click.Path(exists=True, file_okay=False), metavar="DIR",
      help="Also look for call: modules in DIR, after sys.path (repeatable; in the variable, "
      "separate with ':'). Pipelines sent as text have no directory of their own.")
@_opt("--mcp/--no-mcp", "mcp", env="CORRAL_MCP", default=True,
      help="Serve the MCP server at /mcp (streamable HTTP, behind the same tokens; needs the "
      "mcp extra).")
@_opt("--mcp-allow-shell/--mcp-no-shell", "mcp_allow_shell", env="CORRAL_MCP_ALLOW_SHELL",
      default=False, help="Let MCP clients run pipelines whose tasks are shell commands.")
@_opt("--broker", env="CORRAL_BROKER", default=None, metavar="URL",
      help="Send the attempts of submitted runs to the fleet of `corral worker`s fed through "
      "this broker (redis://HOST:PORT/DB, postgresql://[USER@]HOST:PORT/DB); "
      "/health/orchestration reports on its workers.")
def serve(
    host: str,
    port: int,
    store_url: str | None,
    jwt_secret: str | None,
    jwt_public_key: str | None,
    jwks_file: str | None,
    jwt_issuer: str | None,
    jwt_audience: str | None,
    api_tokens_file: str | None,
    metrics_public: bool,
    log_dir: str,
    log_format: str,
    log_level: str,
    paths: tuple[str, ...],
    mcp: bool,
    mcp_allow_shell: bool,
    broker: str | None,
) -> None:
    """Serve the HTTP API, live events, /metrics and the web page (http://HOST:PORT/)."""
    _need_extra("serve")
    import uvicorn

    from corral._errors import BrokenBroker, BrokenStore, CorralError
    from corral._imports import add_to_sys_path
    from corral.cli._exits import StoreError
    from corral.server._app import create_app
    from corral.server._logs import configure_logging
    from corral.server._settings import AuthSettings, Settings

    configure_logging(fmt=log_format, level=log_level)
    add_to_sys_path(paths)
    auth = AuthSettings(jwt_secret=jwt_secret, jwt_public_key=jwt_public_key,
                        jwks_file=jwks_file, jwt_issuer=jwt_issuer, jwt_audience=jwt_audience,
                        api_tokens_file=api_tokens_file)
    if not auth.enabled:
        if not _is_loopback(host):
            click.secho(f"corral: --host {host} ignored: without auth the server listens on "
                        "127.0.0.1 only", fg="red", bold=True, err=True)
            host = "127.0.0.1"
        click.secho(
            "\n  WARNING: AUTH IS OFF. Anyone who can reach this port can run commands as you.\n"
            "  Set --jwt-secret, --jwt-public-key, --jwks-file or --api-tokens-file "
            "(see docs/server.md).\n", fg="red", bold=True, err=True)
    settings = Settings(store_url=store_url, auth=auth, metrics_public=metrics_public,
                        log_dir=Path(log_dir), mcp=mcp, mcp_allow_shell=mcp_allow_shell,
                        broker=broker or None)
    try:
        app = create_app(settings)
    except (BrokenStore, BrokenBroker) as exc:  # names the URL, its password hidden: exit 3
        raise StoreError(str(exc)) from None
    except CorralError as exc:
        raise click.ClickException(str(exc)) from None
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            lifespan="on", ws="none", timeout_graceful_shutdown=3,
                            server_header=False,
                            # Longer than clients keep idle connections (httpx: 5 s, the same
                            # as uvicorn's default): otherwise the server may close one just as
                            # a client reuses it, and that request fails with a read error.
                            timeout_keep_alive=65)
    mcp_at = ", MCP at /mcp" if any(getattr(r, "path", "") == "/mcp" for r in app.routes) else ""
    fleet = f", runs on the fleet at {app.state.service.orchestration.broker_url}" \
        if broker else ""
    click.echo(f"corral: serving on http://{host}:{port}/ (API under /api/v1, docs at /docs"
               f"{mcp_at}{fleet})", err=True)
    uvicorn.Server(config).run()


# ---------------------------------------------------------------------------- token


@click.group(context_settings=_CONTEXT)
def token() -> None:
    """Make tokens for `corral serve`: JWTs for people, static API tokens for machines."""


@token.command(context_settings=_CONTEXT)
@_opt("--role", env="CORRAL_TOKEN_ROLE", type=click.Choice(_ROLES), default="viewer",
      help="What the token may do: viewer reads; operator also runs; admin also prunes.")
@_opt("--ttl", env="CORRAL_TOKEN_TTL", type=_Ttl(), default="1h",
      help="How long a JWT stays valid: 30m, 1h, 7d...")
@_opt("--subject", env="CORRAL_TOKEN_SUBJECT", default=None,
      help="Who the token is for (the JWT's sub, or the static token's name)  "
           "[default: your user name]")
@_secret_option
@_issuer_option
@_audience_option
@_opt("--static", "static", env="CORRAL_TOKEN_STATIC", is_flag=True,
      help="Make a static API token instead of a JWT (it does not expire).")
@_tokens_option
def create(role: str, ttl: timedelta, subject: str | None, jwt_secret: str | None,
           jwt_issuer: str | None, jwt_audience: str | None, static: bool,
           api_tokens_file: str | None) -> None:
    """Print a new token on stdout.

    A JWT is signed with --jwt-secret (the server's). With --static, a random API token is
    printed and its hash appended to --api-tokens-file (or shown, to add by hand).
    """
    _need_extra("token")
    from corral.server._auth import AuthConfigError, hash_token, make_jwt, new_api_token

    who = subject or _user()
    if static:
        value = new_api_token()
        line = f"{hash_token(value)} {role} {re.sub(r'[^A-Za-z0-9._@-]', '_', who)}\n"
        if api_tokens_file:
            path = Path(api_tokens_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(line)
            path.chmod(0o600)
            article = "an" if role[0] in "aeiou" else "a"
            click.echo(f"corral: added {article} {role} token for {who} to {path}", err=True)
        else:
            click.echo(f"corral: add this line to the server's --api-tokens-file:\n  {line}",
                       err=True, nl=False)
        click.echo(value)
        return
    if not jwt_secret:
        raise click.UsageError("give --jwt-secret (or CORRAL_JWT_SECRET), or use --static")
    try:
        click.echo(make_jwt(jwt_secret, role=role, ttl=ttl, subject=who, issuer=jwt_issuer,
                            audience=jwt_audience))
    except AuthConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "corral-cli"


@click.group(context_settings=_CONTEXT)
def _cli() -> None:
    """corral's service commands (the same as `corral serve` and `corral token`)."""


_cli.add_command(serve)
_cli.add_command(token)

if __name__ == "__main__":  # pragma: no cover - python -m corral.server._cli
    _cli(prog_name="python -m corral.server._cli")
    sys.exit(0)
