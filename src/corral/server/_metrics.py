"""Prometheus metrics, in a registry of the server's own (never the global one).

Counters and histograms are fed as things happen: task transitions by the run listener
(:mod:`corral.server._runs`), HTTP requests by a middleware, store writes and scheduler
decisions by thin timers wrapped around the store's ``write`` and each run's
``Scheduler.admit``. Gauges about live runs (ready queue, running tasks, slots) are read at
scrape time from the live runners, so keeping them costs the run loop nothing.

Names follow the Prometheus conventions: ``corral_`` prefix, base units in the name
(``_seconds``, ``_ratio``), ``_total`` on counters (added by the client library).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from corral._scheduler import Scheduler
    from corral.store import Store

__all__ = ["CONTENT_TYPE_LATEST", "METRIC_NAMES", "LiveStats", "Metrics"]

# (concurrency, running, ready, retry_wait) of one live run.
LiveStats = tuple[int, int, int, int]

# Every family this module exposes (as named in the text format, before _total/_bucket...).
METRIC_NAMES = (
    "corral_tasks_started_total",
    "corral_tasks_finished_total",
    "corral_task_duration_seconds",
    "corral_task_retries_total",
    "corral_runs_started_total",
    "corral_runs_finished_total",
    "corral_breaker_changes_total",
    "corral_runs_in_progress",
    "corral_ready_tasks",
    "corral_running_tasks",
    "corral_retry_wait_tasks",
    "corral_concurrency_slots",
    "corral_slot_utilization_ratio",
    "corral_scheduler_decision_seconds",
    "corral_store_write_seconds",
    "corral_http_requests_total",
    "corral_http_request_duration_seconds",
    "corral_event_subscribers",
    # The fleet, the store's pool and the coordinator (corral.server._orchestration).
    "corral_coordinator_uptime_seconds",
    "corral_fleet_workers",
    "corral_fleet_queue_depth",
    "corral_fleet_throughput",
    "corral_fleet_error_ratio",
    "corral_broker_up",
    "corral_broker_saturation",
    "corral_store_pool_connections",
)

# Task attempts last from milliseconds (a Python call) to hours (a build).
_TASK_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# One admission round is microseconds; a round over a huge ready set may reach milliseconds.
_DECISION_BUCKETS = (1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05)
# A group commit is a fraction of a millisecond on SQLite, a round trip or more on PostgreSQL.
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class _LiveCollector(Collector):
    """Gauges computed at scrape time from the live runs' schedulers."""

    def __init__(self, source: Callable[[], Iterable[LiveStats]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        stats = list(self.source())
        slots = sum(s[0] for s in stats)
        running = sum(s[1] for s in stats)
        yield GaugeMetricFamily("corral_runs_in_progress", "Runs executing in this server.",
                                value=len(stats))
        yield GaugeMetricFamily("corral_ready_tasks",
                                "Tasks whose dependencies are met, waiting for a slot "
                                "(the ready-queue depth).", value=sum(s[2] for s in stats))
        yield GaugeMetricFamily("corral_running_tasks", "Task attempts executing now.",
                                value=running)
        yield GaugeMetricFamily("corral_retry_wait_tasks", "Tasks waiting out a retry backoff.",
                                value=sum(s[3] for s in stats))
        yield GaugeMetricFamily("corral_concurrency_slots",
                                "Task slots of the live runs (their concurrency, summed).",
                                value=slots)
        yield GaugeMetricFamily("corral_slot_utilization_ratio",
                                "Running tasks over task slots, 0..1 (0 when idle).",
                                value=running / slots if slots else 0.0)


class Metrics:
    """The server's metrics. ``live_source`` yields :data:`LiveStats` per live run."""

    def __init__(self, live_source: Callable[[], Iterable[LiveStats]] = tuple) -> None:
        self.registry = r = CollectorRegistry()
        self.tasks_started = Counter(
            "corral_tasks_started", "Task attempts started.", ["executor"], registry=r)
        self.tasks_finished = Counter(
            "corral_tasks_finished", "Tasks that reached a final state.", ["state", "executor"],
            registry=r)
        self.attempt_duration = Histogram(
            "corral_task_duration_seconds", "Duration of task attempts, by outcome.",
            ["state", "executor"], buckets=_TASK_BUCKETS, registry=r)
        self.task_retries = Counter(
            "corral_task_retries", "Failed attempts that will be retried.", ["executor"],
            registry=r)
        self.runs_started = Counter("corral_runs_started", "Runs started.", registry=r)
        self.runs_finished = Counter(
            "corral_runs_finished", "Runs that ended, by status.", ["status"], registry=r)
        self.breaker_changes = Counter(
            "corral_breaker_changes", "Circuit breakers that opened, half-opened or closed.",
            ["breaker", "state"], registry=r)
        self.scheduler_decision = Histogram(
            "corral_scheduler_decision_seconds",
            "Time the scheduler takes to decide what starts next (one admission round).",
            buckets=_DECISION_BUCKETS, registry=r)
        self.store_write = Histogram(
            "corral_store_write_seconds", "Time to commit one batch of run history to the store.",
            buckets=_STORE_BUCKETS, registry=r)
        self.http_requests = Counter(
            "corral_http_requests", "HTTP requests answered.", ["method", "route", "status"],
            registry=r)
        self.http_duration = Histogram(
            "corral_http_request_duration_seconds", "Time to answer an HTTP request "
            "(to the first byte of a stream).", ["method", "route"], buckets=_HTTP_BUCKETS,
            registry=r)
        self.event_subscribers = Gauge(
            "corral_event_subscribers", "Open event streams.", registry=r)
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes
        self._live = _LiveCollector(live_source)
        r.register(self._live)

    def set_live_source(self, source: Callable[[], Iterable[LiveStats]]) -> None:
        self._live.source = source

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    # ------------------------------------------------------------------ instruments
    def instrument_store(self, store: Store) -> None:
        """Time every ``store.write`` (the recorder's group commits)."""
        write = store.write
        observe = self.store_write.observe

        def timed_write(*args: Any, **kwargs: Any) -> None:
            t0 = time.perf_counter()
            try:
                write(*args, **kwargs)
            finally:
                observe(time.perf_counter() - t0)

        store.write = timed_write  # type: ignore[method-assign]

    def instrument_scheduler(self, scheduler: Scheduler) -> None:
        """Time every admission round of one run's scheduler."""
        admit = scheduler.admit
        observe = self.scheduler_decision.observe
        clock = time.perf_counter

        def timed_admit(now: float) -> list[int]:
            t0 = clock()
            out = admit(now)
            observe(clock() - t0)
            return out

        scheduler.admit = timed_admit  # type: ignore[method-assign]
