"""The store conformance suite's factory: every test here runs once per backend.

A backend joins the suite with one line in :data:`FACTORIES`: a name and a context manager
that yields the URL of an empty store (and removes it afterwards). The tests then reach it only
through :func:`corral.store.open_store` and the :class:`~corral.store.Store` protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.postgres import schema_url

# name -> (tmp_path -> context manager yielding the URL of an empty store)
FACTORIES: dict[str, Callable[[Path], ContextManager[str]]] = {
    "sqlite": lambda tmp: contextlib.nullcontext(f"sqlite:///{tmp / 'store' / 'corral.db'}"),
    "postgres": lambda tmp: schema_url("corral_conformance"),
}


@pytest.fixture(params=sorted(FACTORIES))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty store, once per backend."""
    with FACTORIES[request.param](tmp_path) as url:
        yield url


@pytest.fixture
def open_test_store(store_url: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``open_test_store(**options)`` opens the test's store; all are closed afterwards.
    Signed values use a key of the test's own, never the developer's."""
    from corral.store import open_store

    opened: list[Any] = []

    def opener(**options: Any) -> Any:
        options.setdefault("values_dir", tmp_path / "values")
        options.setdefault("key", "conformance-test-key")
        store = open_store(store_url, **options)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(open_test_store: Callable[..., Any]) -> Any:
    return open_test_store()
