"""The broker conformance suite's factory: every test here runs once per broker.

A broker joins the suite with one line in :data:`FACTORIES` (``tests/helpers/brokers.py``,
shared with the fleet's other tests): a name and a context manager that yields the URL of an
empty broker on the machine's real server (a Redis namespace, a PostgreSQL schema of its own),
emptied afterwards. The tests reach it only through
:func:`corral.fleet._broker.open_broker` and the :class:`~corral.fleet._broker.Broker` protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import pytest
from tests.helpers.brokers import BROKERS

# name -> context manager yielding the URL of an empty broker
FACTORIES: dict[str, Callable[[], ContextManager[str]]] = dict(BROKERS)


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
