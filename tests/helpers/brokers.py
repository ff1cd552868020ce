"""The fleet's brokers, for tests that run once per broker: a name and a context manager that
yields the URL of an empty broker of that kind on the machine's real server (a Redis namespace
or a PostgreSQL schema of its own), emptied afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager

import pytest
from tests.helpers.postgres import broker_url as postgres_url
from tests.helpers.redis import namespace_url

__all__ = ["BROKERS", "any_broker_url"]

BROKERS: dict[str, Callable[[], ContextManager[str]]] = {
    "postgres": postgres_url,
    "redis": namespace_url,
}


@pytest.fixture(params=sorted(BROKERS))
def any_broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of an empty broker, once per kind of broker."""
    with BROKERS[request.param]() as url:
        yield url
