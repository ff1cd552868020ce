"""Fleet-wide flow control in PostgreSQL: rate limits' GCRA state and circuit breakers as rows
of the broker's schema, shared by every run and worker on it, as
:mod:`corral.fleet.limits_redis` does for Redis (whose note says what is shared and why).

Tables (``sql/postgres/0005_flow_control.sql``)::

    rate_limits        name -> tat (the limit's theoretical arrival time, seconds on the
                       server's clock; NULL: never used) and expires_at (past it, the row
                       means what no row means)
    rate_declarations  (run, name) -> rate, burst: a run's declarations, written by its
                       coordinator, read by the workers that run its tasks (a week)
    breakers           name -> status (a BreakerStatus as JSON) and expires_at (a day after
                       its last change: closed again)

One ask is one transaction: the rows of all the names asked for are made if missing and locked
(``FOR UPDATE``, in name order, so two askers never deadlock), the pure step runs
(:func:`corral._limits.gcra` for each limit, all taken or none; :func:`~corral._limits.ask` /
:func:`~corral._limits.record` for a breaker) and what changed is written before the commit.
Time is the server's ``clock_timestamp()``, so machines whose clocks disagree share one
schedule; a caller's ``now`` and ``due`` are converted to it and the answer back, as for Redis.
Tests pass ``server_time=False`` to drive every process with one fake clock.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from corral._limits import Breaker, BreakerStatus, RateLimit, gcra
from corral.fleet.limits_redis import (
    BREAKER_TTL_S,
    FleetLimits,
    SharedBreakers,
    status_from,
    status_json,
)

__all__ = ["PgFleetLimits", "PostgresBreakers", "PostgresRates", "shared_flow", "worker_limits"]

DECLARATIONS_TTL_S = 7 * 86_400  # as for Redis: a run's declarations outlive its workers

Connect = Callable[[], AbstractContextManager[Any]]  # a pooled psycopg connection (autocommit)

_NOW = "SELECT extract(epoch FROM clock_timestamp())::float8"


class PostgresRates:
    """A :class:`~corral._limits.RateState` in PostgreSQL (see the module's note).
    Thread-safe: each call takes a connection of its own from ``connect``."""

    def __init__(self, connect: Connect, limits: Mapping[str, RateLimit], *,
                 server_time: bool = True, url: str = "postgresql") -> None:
        self.limits = dict(limits)
        self.server_time = server_time
        self.url = url  # to name the broker in errors (without a password)
        self._connect = connect

    def try_acquire(
        self, names: Sequence[str], now: float, due: float | None = None
    ) -> float | None:
        order = sorted(set(names))
        with _talking(self.url, "take a rate limit"), self._connect() as conn, \
                conn.transaction():
            t = float(conn.execute(_NOW).fetchone()[0]) if self.server_time else now
            at_due = None if due is None else t - (now - due)  # as late, on the server's clock
            conn.execute("INSERT INTO rate_limits (name) SELECT unnest(%s::text[]) "
                         "ON CONFLICT DO NOTHING", (order,))
            rows = conn.execute(
                "SELECT name, CASE WHEN expires_at < clock_timestamp() THEN NULL ELSE tat END "
                "FROM rate_limits WHERE name = ANY(%s) ORDER BY name FOR UPDATE",
                (order,)).fetchall()
            tats = {name: -math.inf if tat is None else float(tat) for name, tat in rows}
            retry: float | None = None
            new: dict[str, float] = {}
            for name in order:
                at, after = gcra(tats[name], t, self.limits[name], at_due)
                if at is not None:
                    retry = at if retry is None else max(retry, at)
                new[name] = after
            if retry is not None:
                return now + max(0.0, retry - t)
            expiry = [new[n] + self.limits[n].interval if self.server_time else None
                      for n in order]
            conn.execute(
                "UPDATE rate_limits SET tat = v.tat, expires_at = to_timestamp(v.expiry) "
                "FROM unnest(%s::text[], %s::float8[], %s::float8[]) AS v(name, tat, expiry) "
                "WHERE rate_limits.name = v.name",
                (order, [new[n] for n in order], expiry))
        return None

    def publish(self, run_id: str) -> None:
        """Write the run's declarations where its workers find them (:class:`PgFleetLimits`)."""
        if not self.limits:
            return
        names = sorted(self.limits)
        with _talking(self.url, "record the run's rate limits"), self._connect() as conn, \
                conn.transaction():
            conn.execute("DELETE FROM rate_declarations WHERE written_at < now() - "
                         "make_interval(secs => %s)", (DECLARATIONS_TTL_S,))
            conn.execute(
                "INSERT INTO rate_declarations (run_id, name, rate, burst, text) "
                "SELECT %s, * FROM unnest(%s::text[], %s::float8[], %s::int[], %s::text[]) "
                "ON CONFLICT (run_id, name) DO UPDATE SET rate = excluded.rate, "
                "burst = excluded.burst, text = excluded.text, written_at = now()",
                (run_id, names, [self.limits[n].rate for n in names],
                 [self.limits[n].burst for n in names], [self.limits[n].text for n in names]))


class PgFleetLimits(FleetLimits):
    """A worker's view of the limits of the runs whose attempts it runs (see
    :class:`~corral.fleet.limits_redis.FleetLimits`), read from ``rate_declarations``."""

    def __init__(self, connect: Connect, *, url: str = "postgresql") -> None:
        super().__init__(connect, prefix="", url=url)
        self._pg = connect

    def _load(self, run_id: str) -> PostgresRates:
        with _talking(self.url, "read the run's rate limits"), self._pg() as conn:
            rows = conn.execute("SELECT name, rate, burst, text FROM rate_declarations "
                                "WHERE run_id = %s", (run_id,)).fetchall()
        limits = {str(n): RateLimit(float(r), int(b), str(t)) for n, r, b, t in rows}
        return PostgresRates(self._pg, limits, url=self.url)


class PostgresBreakers(SharedBreakers):
    """A :class:`~corral._limits.BreakerBook` in PostgreSQL (see the module's note)."""

    shared = True

    def __init__(self, connect: Connect, *, server_time: bool = True,
                 url: str = "postgresql") -> None:
        self._connect = connect
        self.server_time = server_time
        self.url = url

    def _update(self, name: str, cfg: Breaker, now: float,
                step: Callable[[BreakerStatus, float], tuple[BreakerStatus, Any]]
                ) -> tuple[Any, float]:
        """Apply ``step`` to the breaker's status under its row's lock; its result and the
        time it was applied at."""
        ttl = max(BREAKER_TTL_S, math.ceil(cfg.window + 2 * cfg.reset))
        with _talking(self.url, "update a circuit breaker"), self._connect() as conn, \
                conn.transaction():
            conn.execute("INSERT INTO breakers (name) VALUES (%s) ON CONFLICT DO NOTHING",
                         (name,))
            raw, t = conn.execute(
                "SELECT CASE WHEN expires_at < clock_timestamp() THEN NULL ELSE status END, "
                "extract(epoch FROM clock_timestamp())::float8 "
                "FROM breakers WHERE name = %s FOR UPDATE", (name,)).fetchone()
            t = float(t) if self.server_time else now
            old = status_from(None if raw is None else json.dumps(raw))
            new, result = step(old, t)
            if new != old:
                conn.execute("UPDATE breakers SET status = %s::jsonb, expires_at = "
                             "clock_timestamp() + make_interval(secs => %s) WHERE name = %s",
                             (status_json(new), ttl, name))
            return result, t


def _connect_of(broker: object) -> tuple[Connect, str] | None:
    """How to borrow a connection of the broker's pool (its schema on the search path) and
    its URL; None when the broker is not a PostgreSQL one."""
    url = getattr(broker, "url", "")
    pool = getattr(broker, "_pool", None)
    if not isinstance(url, str) or pool is None \
            or url.partition("://")[0].lower() not in ("postgresql", "postgres"):
        return None
    connect: Connect = pool.connection
    return connect, url


def shared_flow(
    broker: object, limits: Mapping[str, RateLimit], run_id: str, *, breakers: bool
) -> tuple[PostgresRates | None, PostgresBreakers | None]:
    """As :func:`corral.fleet.limits_redis.shared_flow`, on a PostgreSQL broker's tables."""
    found = _connect_of(broker) if limits or breakers else None
    if found is None:
        return None, None
    connect, url = found
    rates = None
    if limits:
        rates = PostgresRates(connect, limits, url=url)
        rates.publish(run_id)
    return rates, (PostgresBreakers(connect, url=url) if breakers else None)


def worker_limits(broker: object) -> PgFleetLimits | None:
    """What a worker on ``broker`` gives its tasks for ``corral.limit`` (None: not PostgreSQL)."""
    found = _connect_of(broker)
    return None if found is None else PgFleetLimits(found[0], url=found[1])


def _talking(url: str, what: str) -> AbstractContextManager[None]:
    """psycopg errors become :class:`~corral.errors.BrokenBroker` (corral.fleet._broker)."""
    import psycopg

    from corral.fleet._broker import broker_errors

    return broker_errors(url, what, psycopg.Error)
