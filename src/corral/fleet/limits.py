"""Which fleet-wide flow control a broker has: its rate limits' and breakers' state in Redis
(:mod:`.limits_redis`) or in PostgreSQL (:mod:`.limits_postgres`); none for other brokers
(the in-memory one: the run's own :class:`~corral._limits.LocalRates`)."""

from __future__ import annotations

from collections.abc import Mapping

from corral._limits import BreakerBook, RateLimit, RateState
from corral.fleet import limits_postgres, limits_redis

__all__ = ["shared_flow", "worker_limits"]


def shared_flow(
    broker: object, limits: Mapping[str, RateLimit], run_id: str, *, breakers: bool
) -> tuple[RateState | None, BreakerBook | None]:
    """The fleet-wide state of a run's rate ``limits`` (published for its workers; None if it
    declares none) and of its breakers (None unless ``breakers``) on ``broker``; (None, None)
    when the broker keeps none."""
    rates: RateState | None
    book: BreakerBook | None
    rates, book = limits_redis.shared_flow(broker, limits, run_id, breakers=breakers)
    if rates is None and book is None:
        rates, book = limits_postgres.shared_flow(broker, limits, run_id, breakers=breakers)
    return rates, book


def worker_limits(broker: object) -> limits_redis.FleetLimits | None:
    """What a worker on ``broker`` gives its tasks for ``corral.limit`` (None: no shared
    state on that broker)."""
    return limits_redis.worker_limits(broker) or limits_postgres.worker_limits(broker)
