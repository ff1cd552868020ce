"""Who is calling, and may they: bearer tokens (JWT or static API tokens) and three roles.

::

    Authorization: Bearer <token>
        ├── a JWT (three dot-separated parts) ── header alg in the configured set? ── key
        │       HS256 ← --jwt-secret; RS256/ES256 ← --jwt-public-key or --jwks-file (by kid)
        │       then signature, exp (required), nbf, iss and aud (when configured)
        └── anything else ── sha256 of it in --api-tokens-file?
    ──> Principal(subject, role, via)  or  401 (who are you?)
    ──> role >= what the endpoint needs  or  403 (you may not)

Policy:

- The algorithms a token may use come from the configured keys, never from the token:
  ``alg: none`` and HS256-signed-with-the-public-key are rejected because they are not in the
  set, before any key is touched.
- A JWT must carry ``exp``. Its role is the ``role`` claim (or the highest of ``roles``); a
  token without a known role authenticates but may do nothing (403).
- Static tokens are stored only as sha256 digests; the file is re-read when it changes.
- With no key and no token file configured, auth is off: every caller is an admin, and the CLI
  binds to 127.0.0.1 only.

Roles are ordered: ``viewer`` reads, ``operator`` also submits, cancels and resumes, ``admin``
also prunes old runs.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt

from corral._errors import CorralError
from corral.server._errors import ApiError
from corral.server._settings import AuthSettings

__all__ = [
    "AuthConfigError",
    "Authenticator",
    "Principal",
    "Role",
    "hash_token",
    "load_api_tokens",
    "make_jwt",
    "new_api_token",
]

# RFC 7518 3.2: an HMAC key must be at least as long as the hash (32 bytes for HS256).
MIN_SECRET_BYTES = 32
API_TOKEN_PREFIX = "corral_"


class Role(enum.IntEnum):
    """What a caller may do; each role may do everything the ones below it may."""

    NONE = 0  # authenticated, but no known role: may do nothing
    VIEWER = 1  # read runs, logs, events, plans; validate pipelines
    OPERATOR = 2  # submit, cancel and resume runs
    ADMIN = 3  # prune old runs

    @classmethod
    def parse(cls, name: object) -> Role:
        if isinstance(name, str) and name.upper() in cls.__members__ and name.upper() != "NONE":
            return cls[name.upper()]
        return cls.NONE

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a request was authenticated as; ``via`` is jwt, api-token or no-auth."""

    subject: str
    role: Role
    via: str


ANONYMOUS_ADMIN = Principal("anonymous", Role.ADMIN, "no-auth")


class AuthConfigError(CorralError, ValueError):
    """The auth configuration is unusable."""


def hash_token(token: str) -> str:
    """How a static token is stored: ``sha256:`` and the hex digest."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_api_token() -> str:
    """A new static token: the prefix and 256 random bits."""
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def load_api_tokens(path: str | Path) -> dict[str, tuple[Role, str]]:
    """Read a token file: per line ``sha256:<hex> <role> [name]``; ``#`` starts a comment.

    Returns digest -> (role, name). Raises :class:`AuthConfigError` naming the line at fault.
    """
    out: dict[str, tuple[Role, str]] = {}
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise AuthConfigError(f"cannot read the API token file {path}: {exc}") from exc
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("sha256:") or len(parts[0]) != 71:
            raise AuthConfigError(
                f"{path}:{number}: expected 'sha256:<64 hex digits> <role> [name]'")
        role = Role.parse(parts[1])
        if role is Role.NONE:
            raise AuthConfigError(f"{path}:{number}: unknown role {parts[1]!r} "
                                  "(viewer, operator or admin)")
        out[parts[0].lower()] = (role, parts[2] if len(parts) > 2 else f"token{number}")
    return out


def make_jwt(
    secret: str,
    *,
    role: Role | str,
    ttl: timedelta,
    subject: str = "corral-cli",
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token for ``secret``: ``sub``, ``role``, ``iat``, ``exp``, ``jti`` (and
    ``iss``/``aud`` when given). For ``corral token create`` and tests."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise AuthConfigError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes long")
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"sub": subject, "role": str(role), "iat": issued,
                              "exp": issued + int(ttl.total_seconds()), "jti": uuid.uuid4().hex}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


def _unauthorized(reason: str) -> ApiError:
    # RFC 6750: a challenge naming the scheme, and why the token was refused.
    error = ' error="invalid_token",' if not reason.startswith("missing") else ""
    challenge = f'Bearer realm="corral",{error} error_description="{reason}"'
    return ApiError(401, "unauthorized", reason, headers={"WWW-Authenticate": challenge})


def _public_key_algorithm(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise AuthConfigError("the JWT public key must be RSA (RS256) or EC P-256 (ES256)")


class Authenticator:
    """Checks bearer tokens against :class:`AuthSettings`. Build once; thread-safe."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        # alg -> keys to try (more than one only for a JWKS without kids)
        self._keys: dict[str, list[tuple[str | None, Any]]] = {}
        if settings.jwt_secret:
            if len(settings.jwt_secret.encode()) < MIN_SECRET_BYTES:
                raise AuthConfigError(
                    f"--jwt-secret must be at least {MIN_SECRET_BYTES} bytes long "
                    "(generate one: python -c 'import secrets; print(secrets.token_urlsafe(48))')")
            self._keys["HS256"] = [(None, settings.jwt_secret)]
        if settings.jwt_public_key:
            key = _load_public_key(settings.jwt_public_key)
            self._keys.setdefault(_public_key_algorithm(key), []).append((None, key))
        if settings.jwks_file:
            for kid, alg, key in _load_jwks(settings.jwks_file):
                self._keys.setdefault(alg, []).append((kid, key))
        self._tokens_path = settings.api_tokens_file
        self._tokens: dict[str, tuple[Role, str]] = {}
        self._tokens_mtime: float | None = None
        self._lock = threading.Lock()
        if self._tokens_path:
            self._reload_tokens()

    @property
    def algorithms(self) -> list[str]:
        return sorted(self._keys)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an ``Authorization`` header value, or :class:`ApiError` 401."""
        if not self.enabled:
            return ANONYMOUS_ADMIN
        if not authorization:
            raise _unauthorized("missing bearer token")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("malformed Authorization header: expected 'Bearer <token>'")
        if token.count(".") == 2:
            return self._check_jwt(token)
        return self._check_api_token(token)

    # ------------------------------------------------------------------ JWT
    def _check_jwt(self, token: str) -> Principal:
        if not self._keys:
            raise _unauthorized("JWTs are not accepted here: no JWT key is configured")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthorized("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._keys:
            raise _unauthorized(f"token algorithm {alg!r} is not accepted "
                                f"(accepted: {', '.join(self.algorithms)})")
        kid = header.get("kid")
        keys = self._keys[alg]
        if kid is not None and any(k is not None for k, _ in keys):
            keys = [(k, key) for k, key in keys if k == kid]
            if not keys:
                raise _unauthorized(f"unknown key id {kid!r}")
        s = self.settings
        options: dict[str, Any] = {"require": ["exp"], "verify_aud": s.jwt_audience is not None}
        if s.jwt_issuer:
            options["require"].append("iss")
        if s.jwt_audience:
            options["require"].append("aud")
        claims: dict[str, Any] | None = None
        failure = "invalid token"
        for _, key in keys:
            try:
                claims = jwt.decode(token, key, algorithms=[alg], audience=s.jwt_audience,
                                    issuer=s.jwt_issuer, leeway=s.leeway, options=options)  # type: ignore[arg-type]
                break
            except jwt.ExpiredSignatureError:
                raise _unauthorized("token expired") from None
            except jwt.InvalidSignatureError:
                failure = "token signature is invalid"
            except jwt.InvalidIssuerError:
                raise _unauthorized("token issuer is not accepted") from None
            except jwt.InvalidAudienceError:
                raise _unauthorized("token audience is not accepted") from None
            except jwt.MissingRequiredClaimError as exc:
                raise _unauthorized(f"token lacks the {exc.claim!r} claim") from None
            except jwt.ImmatureSignatureError:
                raise _unauthorized("token is not valid yet") from None
            except jwt.PyJWTError as exc:
                failure = f"invalid token: {exc}"
        if claims is None:
            raise _unauthorized(failure)
        role = Role.parse(claims.get("role"))
        roles = claims.get("roles")
        if isinstance(roles, list):
            role = max([role, *(Role.parse(r) for r in roles)])
        subject = claims.get("sub")
        return Principal(str(subject) if subject is not None else "unknown", role, "jwt")

    # ------------------------------------------------------------------ static tokens
    def _reload_tokens(self) -> None:
        assert self._tokens_path is not None
        try:
            mtime = os.stat(self._tokens_path).st_mtime
        except OSError as exc:
            raise AuthConfigError(
                f"cannot read the API token file {self._tokens_path}: {exc}") from exc
        if mtime != self._tokens_mtime:
            self._tokens = load_api_tokens(self._tokens_path)
            self._tokens_mtime = mtime

    def _check_api_token(self, token: str) -> Principal:
        if not self._tokens_path:
            raise _unauthorized("malformed token")
        with self._lock:
            try:
                self._reload_tokens()
            except AuthConfigError:
                pass  # a file being rewritten: keep the tokens we had
            tokens = self._tokens
        found = tokens.get(hash_token(token))
        if found is None:
            raise _unauthorized("unknown API token")
        role, name = found
        return Principal(name, role, "api-token")


def _load_public_key(value: str) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = value
    if not value.lstrip().startswith("-----BEGIN"):
        try:
            text = Path(value).read_text("utf-8")
        except OSError as exc:
            raise AuthConfigError(f"cannot read the JWT public key {value}: {exc}") from exc
    try:
        return load_pem_public_key(text.encode())
    except ValueError as exc:
        raise AuthConfigError(f"the JWT public key is not a PEM public key: {exc}") from exc


def _load_jwks(path: str) -> list[tuple[str | None, str, Any]]:
    """(kid, alg, key) for every usable signing key of a JWKS file."""
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise AuthConfigError(f"cannot read the JWKS file {path}: {exc}") from exc
    entries = data.get("keys") if isinstance(data, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise AuthConfigError(f"{path}: a JWKS file is {{\"keys\": [...]}} with at least one key")
    out: list[tuple[str | None, str, Any]] = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK(dict(entry))
        except jwt.PyJWTError as exc:
            raise AuthConfigError(f"{path}: key {n} is not usable: {exc}") from exc
        alg = entry.get("alg") or _public_key_algorithm(jwk.key)
        if alg not in ("RS256", "ES256"):
            raise AuthConfigError(f"{path}: key {n} has algorithm {alg!r}; RS256 or ES256 only")
        out.append((jwk.key_id, alg, jwk.key))
    return out
