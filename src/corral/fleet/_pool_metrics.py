"""A pool's Prometheus metrics: its size, load, scaling decisions and its workers' health.

``corral worker --min-workers ... --metrics-port PORT`` serves them (Prometheus text format,
``GET /metrics`` on that port), from a registry of the pool's own. The supervisor calls
:meth:`PoolMetrics.observe` once per step with what it measured and decided; nothing here
reads the broker. Needs ``prometheus-client`` (the ``server`` extra), imported only when a
pool is asked for metrics.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from corral.fleet._autoscale import Decision, Direction, Load
from corral.fleet._health import Health

__all__ = ["METRIC_NAMES", "PoolMetrics"]

METRIC_NAMES = (
    "corral_pool_workers",
    "corral_pool_workers_limit",
    "corral_pool_running_attempts",
    "corral_pool_waiting_attempts",
    "corral_pool_queued_attempts",
    "corral_pool_utilisation_ratio",
    "corral_pool_target_utilisation_ratio",
    "corral_pool_scaling_decisions_total",
    "corral_pool_worker_restarts_total",
    "corral_pool_workers_by_health",
)


class PoolMetrics:
    """The pool's gauges and counters, in ``registry`` (a new one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.workers = Gauge("corral_pool_workers", "Worker processes of the pool (not those "
                             "stopping)", registry=r)
        self.limit = Gauge("corral_pool_workers_limit", "The pool's --min-workers and "
                           "--max-workers", ["bound"], registry=r)
        self.running = Gauge("corral_pool_running_attempts", "Attempts the pool's workers "
                             "run, as they said at their last beat", registry=r)
        self.waiting = Gauge("corral_pool_waiting_attempts", "The pool's share of the "
                             "attempts queued on its queues (by its live capacity beside the "
                             "other workers of those queues)", registry=r)
        self.queued = Gauge("corral_pool_queued_attempts", "Attempts queued on the pool's "
                            "queues that no worker holds", registry=r)
        self.utilisation = Gauge("corral_pool_utilisation_ratio", "(running + waiting) / "
                                 "the pool's slots", registry=r)
        self.target = Gauge("corral_pool_target_utilisation_ratio", "The utilisation the "
                            "pool aims at", registry=r)
        self.decisions = Counter("corral_pool_scaling_decisions", "Times the pool grew or "
                                 "shrank", ["direction"], registry=r)
        self.restarts = Counter("corral_pool_worker_restarts", "Workers that exited unasked "
                                "and were replaced", registry=r)
        self.health = Gauge("corral_pool_workers_by_health", "The pool's workers by health "
                            "state", ["health"], registry=r)
        for direction in (Direction.UP, Direction.DOWN):
            self.decisions.labels(direction.value)
        for state in Health:
            self.health.labels(state.value)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve ``GET /metrics`` on ``addr:port`` from a daemon thread."""
        start_http_server(port, addr=addr, registry=self.registry)

    def bounds(self, low: int, high: int, target: float) -> None:
        self.limit.labels("min").set(low)
        self.limit.labels("max").set(high)
        self.target.set(target)

    def observe(self, load: Load, decision: Decision, health: Iterable[Health]) -> None:
        """One step of the supervisor: what it measured, decided, and its workers' health."""
        self.workers.set(decision.workers)
        self.running.set(load.running)
        self.waiting.set(load.waiting)
        self.queued.set(load.waiting if load.queued is None else load.queued)
        self.utilisation.set(min(load.utilisation, 1e9))  # demand with no slots: inf
        if decision.direction is not Direction.HOLD:
            self.decisions.labels(decision.direction.value).inc()
        counts = dict.fromkeys(Health, 0)
        for state in health:
            counts[state] += 1
        for state, n in counts.items():
            self.health.labels(state.value).set(n)

    def restarted(self) -> None:
        self.restarts.inc()
