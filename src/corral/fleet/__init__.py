"""The fleet: attempts of a run sent through a broker to ``corral worker`` processes.

==================  ============================================================
``_protocol``       attempt and event messages (what travels, how it is pickled)
``_broker``         the :class:`Broker` protocol; :func:`open_broker` by URL
``redis``           the Redis Streams broker (the ``redis`` extra)
``postgres``        the PostgreSQL broker (the ``postgres`` extra); ``_pg_schema``: its
                    schema and migrations; ``_pg_listen``: its wake-ups
``_coordinator``    a run's :class:`FleetSession` (the run loop's side)
``_balance``        the queues' balancing strategies (which worker an attempt is sent to)
``_worker``         the ``corral worker`` loop (:class:`Worker`)
``limits``          which fleet-wide flow control a broker has (Redis, PostgreSQL)
``limits_redis``    fleet-wide rate limits and breakers in Redis, one script
``limits_postgres`` the same in PostgreSQL tables, one transaction with row locks
``_health``         a worker's health from the registry and now (pure)
``_summary``        the pools by queue: health counts, capacity, queued, throughput
``_autoscale``      a pool's scaling policy: how many workers, and why (pure)
``_pool``           ``corral worker --min/--max-workers``: the pool supervisor
==================  ============================================================

The executor that plugs the fleet into a run is :mod:`corral.executors.fleet`; see
docs/fleet.md. Nothing here is imported by ``import corral``, and a broker's client library only
when a broker of its kind is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

from corral._lazy import lazy_attributes as _lazy_attributes

if _TYPE_CHECKING:
    from corral.fleet._broker import Broker, open_broker
    from corral.fleet._coordinator import FleetSession
    from corral.fleet._worker import Worker, WorkerOptions

__all__ = ["Broker", "FleetSession", "Worker", "WorkerOptions", "open_broker"]

_LAZY = {
    "Broker": "corral.fleet._broker",
    "open_broker": "corral.fleet._broker",
    "FleetSession": "corral.fleet._coordinator",
    "Worker": "corral.fleet._worker",
    "WorkerOptions": "corral.fleet._worker",
}


__getattr__ = _lazy_attributes("corral.fleet", _LAZY)
