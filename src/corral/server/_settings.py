"""What a server is configured with: two small value objects, built once by the CLI (or a test).

:class:`AuthSettings` groups everything about tokens; :class:`Settings` the rest. Nothing in the
server reads the environment: ``corral serve`` layers options (command line > ``CORRAL_*``
variables > defaults) and hands the result to :func:`corral.server.create_app`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

__all__ = ["AuthSettings", "Settings"]


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """How bearer tokens are checked. With nothing set, auth is off (see :attr:`enabled`).

    ``jwt_secret`` enables HS256; ``jwt_public_key`` (PEM text or the path of a PEM file)
    enables RS256 or ES256, as the key's type says; ``jwks_file`` is a JSON Web Key Set whose
    keys are picked by the token's ``kid``. ``jwt_issuer`` and ``jwt_audience``, when set,
    must match the token's ``iss`` and ``aud``. ``api_tokens_file`` lists static tokens for
    machines, stored hashed (see :func:`corral.server._auth.load_api_tokens`).
    """

    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwks_file: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    api_tokens_file: str | None = None
    # Clock skew tolerated on exp/nbf/iat between the token's issuer and this server.
    leeway: timedelta = timedelta(seconds=5)

    @property
    def enabled(self) -> bool:
        """True when any way of checking a token is configured."""
        return any((self.jwt_secret, self.jwt_public_key, self.jwks_file, self.api_tokens_file))

    def __repr__(self) -> str:  # never print the secret
        secret = "***" if self.jwt_secret else None
        return (f"AuthSettings(jwt_secret={secret!r}, jwt_public_key={self.jwt_public_key!r}, "
                f"jwks_file={self.jwks_file!r}, jwt_issuer={self.jwt_issuer!r}, "
                f"jwt_audience={self.jwt_audience!r}, api_tokens_file={self.api_tokens_file!r})")


@dataclass(frozen=True, slots=True)
class Settings:
    """A server's configuration.

    ``store_url`` is the run store (``None``: ``$CORRAL_STORE`` or ``.corral/corral.db``, as for
    the CLI). ``log_dir`` receives task logs (one folder per run) and ``pipelines_dir`` the text
    of every submitted pipeline, so that a run can be resumed later. ``metrics_public`` serves
    ``/metrics`` without a token. ``max_body_bytes`` caps a request body. ``mcp`` serves the
    MCP server at ``/mcp`` (when the ``mcp`` extra is installed), ``mcp_allow_shell`` lets its
    agents run shell pipelines. ``broker``: the fleet's broker URL; submitted runs send
    their attempts to ``corral worker`` processes through it (docs/fleet.md), and
    ``/health/orchestration`` reports on its workers.
    """

    store_url: str | None = None
    auth: AuthSettings = field(default_factory=AuthSettings)
    metrics_public: bool = False
    log_dir: Path = Path(".corral/logs")
    pipelines_dir: Path = Path(".corral/pipelines")
    # A pipeline of 10,000 tasks written out in full is about 1 MiB; allow a few times that.
    max_body_bytes: int = 8 * 1024 * 1024
    # How often a stream for a run executing in another process looks for news in the store.
    poll_interval: float = 0.5
    # A comment line sent on an idle event stream, so proxies do not close it.
    keepalive_interval: float = 15.0
    # Serve the MCP server at /mcp when the mcp extra is installed (docs/mcp.md); whether
    # agents may submit pipelines with shell commands there.
    mcp: bool = True
    mcp_allow_shell: bool = False
    broker: str | None = None
