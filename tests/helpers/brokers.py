"""The fleet's brokers, for tests that run once per broker: a name and a context manager that
yields the URL of an empty broker of that kind on the machine's real server (a Redis namespace
or a PostgreSQL schema of its own), emptied afterwards."""

from __future__ import annotations

import atexit
import contextlib
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager

import pytest
from tests.helpers.postgres import broker_url as postgres_url
from tests.helpers.redis import namespace_url, start_worker, stop_worker

__all__ = ["BROKERS", "any_broker_url", "shared_fleet"]

BROKERS: dict[str, Callable[[], ContextManager[str]]] = {
    "postgres": postgres_url,
    "redis": namespace_url,
}


@pytest.fixture(params=sorted(BROKERS))
def any_broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of an empty broker, once per kind of broker."""
    with BROKERS[request.param]() as url:
        yield url


_shared: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}


def shared_fleet(kind: str = "redis") -> str:
    """The URL of a broker of ``kind`` served by one worker for the whole session (the
    executor conformance suite's fleet), started on first use and ended at exit."""
    found = _shared.get(kind)
    if found is not None and found[1].poll() is None:
        return found[0]
    stack = contextlib.ExitStack()
    url = stack.enter_context(BROKERS[kind]())
    proc = start_worker(url, "--concurrency", "8", "--heartbeat-timeout", "5s", "--grace", "0")
    stack.callback(stop_worker, proc)  # first out: the worker, then its broker's data
    _shared[kind] = (url, proc)
    atexit.register(stack.close)
    return url
