"""What PostgreSQL's fleet-wide flow control keeps beyond the conformance suite
(tests/conformance/flow): a rate limit's row expires an interval after its theoretical arrival
time, and a breaker's row past its expiry reads as closed."""

from __future__ import annotations

import json

import pytest
from tests.helpers.postgres import broker_url

from corral._limits import Breaker, BreakerStatus, parse_rate_limit
from corral.fleet.limits_postgres import PostgresBreakers, PostgresRates
from corral.fleet.postgres import PostgresBroker

CFG = Breaker(failures=2, window=10.0, reset=5.0, half_open=1)


@pytest.fixture
def broker():
    """An empty broker (its tables made)."""
    with broker_url() as url:
        broker = PostgresBroker.connect(url)
        try:
            yield broker
        finally:
            broker.close()


def _sql(broker, query, params=()):
    with broker._pool.connection() as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description is not None else []


def test_a_rate_limits_row_expires_an_interval_after_its_tat(broker):
    rates = PostgresRates(broker._pool.connection, {"api": parse_rate_limit("1/h")})
    assert rates.try_acquire(["api"], 5.0) is None
    (tat, expires), = _sql(broker, "SELECT tat, extract(epoch FROM expires_at)::float8 "
                                   "FROM rate_limits WHERE name = 'api'")
    assert expires == pytest.approx(tat + 3600, abs=1e-3)


def test_an_expired_breaker_is_closed(broker):
    book = PostgresBreakers(broker._pool.connection)
    _sql(broker, "INSERT INTO breakers (name, status, expires_at) VALUES ('svc', %s::jsonb, "
                 "now() - interval '1 s')",
         (json.dumps({"state": "open", "recent": [], "opened_at": 1e12, "probes": 0,
                      "passed": 0}),))
    assert book.ask("svc", CFG, 0.0) == (None, BreakerStatus(), False)
