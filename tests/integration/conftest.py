"""Fixtures for integration tests: every store test runs against SQLite and real PostgreSQL.

PostgreSQL is the server on this machine (``CORRAL_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``). Each test gets a fresh schema, selected
through the URL's ``search_path`` and dropped afterwards. When the server is unreachable the
PostgreSQL tests skip, saying why, unless ``CORRAL_REQUIRE_SERVICES`` is set: then they fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.brokers import any_broker_url  # noqa: F401 (a fixture: each fleet broker)
from tests.helpers.postgres import schema_url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose tables live in a fresh schema, dropped after the test."""
    with schema_url() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'corral.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def open_test_store(store_url: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``open_test_store(**options)`` opens the test's store; all are closed afterwards."""
    from corral.store import open_store

    opened: list[Any] = []

    def opener(**options: Any) -> Any:
        options.setdefault("values_dir", tmp_path / "values")
        options.setdefault("key", "integration-test-key")  # never the developer's key file
        store = open_store(store_url, **options)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(open_test_store: Callable[..., Any]) -> Any:
    return open_test_store()
