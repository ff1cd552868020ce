"""The fleet-wide flow control conformance suite's factory: every test here runs once per
broker that keeps rate limits and circuit breakers for its whole fleet (Redis, PostgreSQL).

A test gets a :class:`Flow`: the URL of an empty broker on the machine's real server, the
broker opened on it, and the few raw reads and writes of its state that a test needs to set a
scene or check a count (each server keeps the state its own way). Everything else goes through
what corral itself uses: :func:`corral.fleet.limits.shared_flow` and
:func:`~corral.fleet.limits.worker_limits`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from tests.helpers.brokers import BROKERS

from corral._limits import BreakerBook, RateLimit, RateState


class Flow:
    """A broker's fleet-wide flow control, and its raw state for setting scenes."""

    def __init__(self, kind: str, url: str, broker: Any) -> None:
        self.kind, self.url, self.broker = kind, url, broker

    def shared(self, limits: Mapping[str, RateLimit] | None = None, *, run_id: str = "run",
               server_time: bool = True) -> tuple[RateState, BreakerBook]:
        """A run's shared rates of ``limits`` and its breakers, on the server's clock or, with
        ``server_time=False``, on the clock the test passes."""
        from corral.fleet.limits import shared_flow

        rates, book = shared_flow(self.broker, limits or {"_": RateLimit(1.0)}, run_id,
                                  breakers=True)
        assert rates is not None, f"{self.kind} keeps no rate limits"
        assert book is not None, f"{self.kind} keeps no circuit breakers"
        rates.server_time = server_time  # type: ignore[attr-defined]
        book.server_time = server_time  # type: ignore[attr-defined]
        return rates, book

    def put_breaker(self, name: str, status: Mapping[str, Any]) -> None:
        """Write breaker ``name``'s status as a run would have left it."""
        doc = json.dumps(dict(status))
        if self.kind == "redis":
            client = self._redis()
            client.set(f"{self.broker.keys.prefix}br:{name}", doc)
            client.close()
        else:
            self._sql("INSERT INTO breakers (name, status) VALUES (%s, %s::jsonb)", (name, doc))

    def tat(self, name: str) -> tuple[float, float]:
        """The server's time now and rate limit ``name``'s theoretical arrival time."""
        if self.kind == "redis":
            client = self._redis()
            try:
                now = float(client.time()[0])
                return now, float(client.get(f"{self.broker.keys.prefix}rl:{name}"))
            finally:
                client.close()
        (now, tat), = self._sql("SELECT extract(epoch FROM clock_timestamp())::float8, tat "
                                "FROM rate_limits WHERE name = %s", (name,))
        return float(now), float(tat)

    def _redis(self) -> Any:
        import redis
        from tests.helpers.redis import REDIS_URL  # the server (self.url names a namespace)

        return redis.Redis.from_url(REDIS_URL)

    def _sql(self, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self.broker._pool.connection() as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description is not None else []


@pytest.fixture(params=sorted(BROKERS))
def flow(request: pytest.FixtureRequest) -> Iterator[Flow]:
    from corral.fleet._broker import open_broker

    with BROKERS[request.param]() as url:
        broker = open_broker(url)
        try:
            yield Flow(request.param, url, broker)
        finally:
            broker.close()
