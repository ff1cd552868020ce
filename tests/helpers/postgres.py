"""The real PostgreSQL of this machine, for tests: a fresh schema per test, dropped after.

``CORRAL_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``). When the
server is unreachable a test that needs it skips, saying why, unless ``CORRAL_REQUIRE_SERVICES``
is set: then it fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from urllib.parse import quote

import pytest

POSTGRES_URL = os.environ.get(
    "CORRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

_problem: dict[str, str | None] = {}


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used (None: it can). Asked once per session."""
    if "pg" not in _problem:
        try:
            import psycopg

            with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            _problem["pg"] = None
        except Exception as exc:
            _problem["pg"] = f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc}"
    return _problem["pg"]


def require_postgres() -> None:
    problem = postgres_problem()
    if problem is None:
        return
    if os.environ.get("CORRAL_REQUIRE_SERVICES"):
        pytest.fail(f"{problem} (and CORRAL_REQUIRE_SERVICES is set)")
    pytest.skip(problem)


def with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@contextlib.contextmanager
def schema_url(prefix: str = "corral_test") -> Iterator[str]:
    """A store URL whose tables live in a fresh schema (the URL's search_path), dropped after."""
    require_postgres()
    import psycopg

    schema = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_search_path(POSTGRES_URL, schema)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@contextlib.contextmanager
def broker_url(prefix: str = "corral_fleet_test") -> Iterator[str]:
    """A fleet broker URL with a schema of its own (``?schema=``: its own queues, dead letters
    and workers), which the broker makes when first opened; dropped after."""
    require_postgres()
    import psycopg

    schema = f"{prefix}_{secrets.token_hex(6)}"
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}schema={schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
