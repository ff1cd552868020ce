"""``GET /health/orchestration`` and its Prometheus twins: this server as the runs'
coordinator, the fleet's pools (one per queue its workers serve) and the store's connection
pool, in one report.

::

    route, or a /metrics scrape ──> Orchestration.report()            (on the event loop)
        ├─ coordinator: the run manager (live runs, accepting) and the uptime     no I/O
        ├─ store: its pool's figures (psycopg_pool's get_stats; None for SQLite)  no I/O
        └─ fleet: one probe thread at a time (workers, queue depths, saturation),
           awaited at most ``timeout``: a broker that stops answering is "unavailable"
           with the reason, fast; the probe stuck on it is waited on again, never doubled
    pools_of(sample, base) ── per queue (corral.fleet._summary, pure; also behind
                              ``corral workers --json``)

Throughput is attempts finished per second over the interval since a sample the server
kept (samples are kept at least 1 s apart, so the interval is at least that); before there
is one, each worker's lifetime rate, summed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from corral.fleet._backpressure import BackpressurePolicy
from corral.fleet._broker import Broker, safe_url
from corral.fleet._health import Health, HealthThresholds
from corral.fleet._summary import FleetSample, pools_of, read_sample

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from corral.server._runs import RunManager
    from corral.store import Store

__all__ = ["PROBE_TIMEOUT_S", "Orchestration", "OrchestrationCollector"]

# How long a request waits for the broker: longer than a healthy round trip by far, short
# enough that a health check (often given 1-5 s) gets an answer rather than timing out.
PROBE_TIMEOUT_S = 2.0
# Samples kept for throughput are at least this far apart: shorter intervals are noise.
MIN_INTERVAL_S = 1.0
# From this share of its connections (or memory) in use a broker or pool counts as saturated:
# where the workers start to slow down (corral.fleet._backpressure).
SATURATED = BackpressurePolicy().high

@dataclass(slots=True)
class _Kept:
    """The samples kept for throughput: the last two, at least MIN_INTERVAL_S apart."""

    samples: deque[FleetSample] = field(default_factory=lambda: deque(maxlen=2))

    def base_for(self, sample: FleetSample) -> FleetSample | None:
        """The newest kept sample at least MIN_INTERVAL_S older than ``sample``; keeps
        ``sample`` when it is that far from the newest."""
        base = next((s for s in reversed(self.samples)
                     if sample.at - s.at >= MIN_INTERVAL_S), None)
        if not self.samples or sample.at - self.samples[-1].at >= MIN_INTERVAL_S:
            self.samples.append(sample)
        return base


class Orchestration:
    """The report's sources, and the last report (for the metrics). Methods run on the
    event loop; the broker is read in a thread of its own."""

    def __init__(self, runs: RunManager, store: Store, broker: Broker | None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.runs = runs
        self.store = store
        self.broker = broker
        self.clock = clock
        self.started_at = clock()
        self._started = time.monotonic()
        self._probe: asyncio.Future[FleetSample] | None = None
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="corral-orchestration")
        self._kept = _Kept()
        self.last: dict[str, Any] | None = None

    @property
    def broker_url(self) -> str | None:
        """The broker's URL, its password hidden (None: no broker)."""
        return None if self.broker is None else safe_url(self.broker.url)

    def close(self) -> None:
        """Let a stuck probe go (its thread ends when the broker answers or drops it)."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self.broker is not None:
            self.broker.close()

    # ------------------------------------------------------------------ the report
    async def report(self, timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
        """The whole report (the body of ``GET /health/orchestration``)."""
        reasons: list[str] = []
        broker: dict[str, Any] | None = None
        pools: list[dict[str, Any]] = []
        if self.broker is not None:
            broker = {"url": self.broker_url, "reachable": False,
                      "saturation": None, "error": None}
            try:
                sample = await self._sample(timeout)
            except Exception as exc:
                broker["error"] = f"{type(exc).__name__}: {exc}"
                reasons.append(f"the broker cannot be read: {broker['error']}")
            else:
                broker.update(reachable=True, saturation=round(sample.saturation, 4))
                thresholds = HealthThresholds(heartbeat_timeout=self.broker.heartbeat_timeout)
                pools = pools_of(sample, self._kept.base_for(sample), thresholds)
                reasons += _fleet_reasons(pools, sample.saturation)
        store = self._store()
        pool = store["pool"]
        if pool is not None and pool["saturation"] >= SATURATED:
            reasons.append(f"the store's connection pool is {pool['saturation']:.0%} in use")
        coordinator = self._coordinator()
        if not coordinator["accepting"]:
            reasons.append("the server is shutting down")
        unavailable = not coordinator["accepting"] or (broker is not None
                                                        and not broker["reachable"])
        status = "unavailable" if unavailable else "degraded" if reasons else "ok"
        self.last = {"status": status, "reasons": reasons, "coordinator": coordinator,
                     "broker": broker, "pools": pools, "store": store}
        return self.last

    async def _sample(self, timeout: float) -> FleetSample:
        probe = self._probe
        if probe is None or probe.done():  # else: the one in flight is still waited on
            probe = self._probe = asyncio.wrap_future(self._threads.submit(self._read_broker))
            # Whoever gave up waiting, the outcome is read: no "exception never retrieved".
            probe.add_done_callback(_retrieve)
        try:
            return await asyncio.wait_for(asyncio.shield(probe), timeout)
        except TimeoutError:
            raise TimeoutError(f"the broker did not answer within {timeout:g}s") from None

    def _read_broker(self) -> FleetSample:
        """Blocking: in the probe thread."""
        assert self.broker is not None
        return read_sample(self.broker, self.clock)

    def _coordinator(self) -> dict[str, Any]:
        runs = self.runs
        return {"status": "running" if runs.accepting else "stopping",
                "started_at": datetime.fromtimestamp(self.started_at, UTC).isoformat(),
                "uptime_s": round(time.monotonic() - self._started, 3),
                "live_runs": len(runs.live_ids()), "accepting": runs.accepting}

    def _store(self) -> dict[str, Any]:
        from corral.store._interface import scheme_of

        url = self.store.url
        kind = scheme_of(url)
        reader = getattr(self.store, "pool_stats", None)  # not in the Store protocol
        stats = reader() if callable(reader) else None
        pool = None if stats is None else {
            "size": stats.size, "max": stats.max, "active": stats.active, "idle": stats.idle,
            "waiting": stats.waiting, "saturation": round(stats.saturation, 4)}
        return {"url": url, "kind": "postgresql" if kind == "postgres" else kind, "pool": pool}


def _retrieve(future: asyncio.Future[FleetSample]) -> None:
    if not future.cancelled():
        future.exception()


def _fleet_reasons(pools: list[dict[str, Any]], saturation: float) -> list[str]:
    reasons = []
    if not any(p["capacity"] for p in pools):
        reasons.append("no worker takes work from the broker")
    for p in pools:
        sick = p["unhealthy"] + p["degraded"]
        if sick:
            reasons.append(f"queue {p['queue']!r}: {p['unhealthy']} unhealthy and "
                           f"{p['degraded']} degraded of {p['workers']} workers")
    if saturation >= SATURATED:
        reasons.append(f"the broker is {saturation:.0%} full")
    return reasons


class OrchestrationCollector(Collector):
    """The last report as gauges (the /metrics route refreshes it before rendering)."""

    def __init__(self, source: Callable[[], Mapping[str, Any] | None]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        last = self.source() or {}
        coordinator = last.get("coordinator") or {}
        yield GaugeMetricFamily("corral_coordinator_uptime_seconds",
                                "Seconds since this server started coordinating runs.",
                                value=coordinator.get("uptime_s", 0.0))
        workers = GaugeMetricFamily("corral_fleet_workers", "The fleet's workers serving a "
                                    "queue, by health.", labels=["queue", "health"])
        depth = GaugeMetricFamily("corral_fleet_queue_depth", "Attempts queued that no "
                                  "worker holds.", labels=["queue"])
        rate = GaugeMetricFamily("corral_fleet_throughput", "Attempts finished per second "
                                 "by a queue's workers (since the previous kept sample).",
                                 labels=["queue"])
        errors = GaugeMetricFamily("corral_fleet_error_ratio", "Failed share of the attempts "
                                   "a queue's workers finished in their recent health windows "
                                   "(absent: none finished lately).", labels=["queue"])
        for p in last.get("pools") or ():
            for state in Health:
                workers.add_metric([p["queue"], state.value], p[state.value])
            depth.add_metric([p["queue"]], p["queued"])
            rate.add_metric([p["queue"]], p["throughput_per_s"])
            if p["error_rate"] is not None:
                errors.add_metric([p["queue"]], p["error_rate"])
        yield from (workers, depth, rate, errors)
        broker = last.get("broker")
        up = GaugeMetricFamily("corral_broker_up", "1 when the fleet's broker answered the "
                               "last probe, 0 when not (no sample: no broker).")
        full = GaugeMetricFamily("corral_broker_saturation", "How full the broker's server "
                                 "is, 0..1 (connections or memory).")
        if broker is not None:
            up.add_metric([], 1.0 if broker["reachable"] else 0.0)
            if broker["saturation"] is not None:
                full.add_metric([], broker["saturation"])
        yield from (up, full)
        pool = (last.get("store") or {}).get("pool")
        conns = GaugeMetricFamily("corral_store_pool_connections", "The PostgreSQL store's "
                                  "connection pool: in use, idle, and its maximum.",
                                  labels=["state"])
        if pool is not None:
            for kind in ("active", "idle", "max"):
                conns.add_metric([kind], pool[kind])
        yield conns
