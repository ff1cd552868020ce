"""The broker conformance suite's factory: every test here runs once per broker.

A broker joins the suite with one line in :data:`FACTORIES`: a name and a context manager
that yields the URL of an empty broker (and empties it afterwards): Redis (a namespace of
its own) and PostgreSQL (a schema of its own), the real servers of the machine. The tests reach it only
through :func:`corral.fleet._broker.open_broker` and the :class:`~corral.fleet._broker.Broker`
protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import pytest
from tests.helpers.postgres import broker_url as postgres_url
from tests.helpers.redis import namespace_url

# name -> context manager yielding the URL of an empty broker (a namespace of its own)
FACTORIES: dict[str, Callable[[], ContextManager[str]]] = {
    "postgres": postgres_url,
    "redis": namespace_url,
}


@pytest.fixture(params=sorted(FACTORIES))
def broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    with FACTORIES[request.param]() as url:
        yield url


@pytest.fixture
def open_test_broker(broker_url: str) -> Iterator[Callable[..., Any]]:
    """``open_test_broker(heartbeat_timeout=...)``: the test's broker; closed afterwards."""
    from corral.fleet._broker import open_broker

    opened: list[Any] = []

    def make(**kw: Any) -> Any:
        broker = open_broker(broker_url, **kw)
        opened.append(broker)
        return broker

    yield make
    for broker in opened:
        broker.close()
