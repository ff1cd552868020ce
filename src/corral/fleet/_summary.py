"""The fleet's pools as an operator sees them: one per queue its workers serve, with the
workers by health, their capacity, the work queued, running and done, and the throughput.

Pure but for :func:`read_sample` (the broker reads behind one sample)::

    read_sample(broker) ──> FleetSample(at, workers, depths, saturation)
    pools_of(sample, base) ──> [{queue, workers, healthy, ..., capacity, running, queued,
                                 done, recent_done, recent_failed, error_rate,
                                 throughput_per_s, throughput_over_s}, ...]

A worker that serves several queues counts in each of their pools. Throughput is what the
workers finished between ``base`` (an earlier sample) and ``sample``, per second; without a
base, each worker's lifetime rate (done since it started, per second), summed. The error
rate is over the workers' recent windows (what their health is judged on: failed of
``recent_done``, None when none finished lately). Used by
``GET /health/orchestration`` (:mod:`corral.server._orchestration`, which keeps the bases)
and ``corral workers --json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corral.fleet._broker import Broker, WorkerInfo
from corral.fleet._health import TAKING_WORK, Health, HealthThresholds, assess

__all__ = ["FleetSample", "pools_of", "read_sample"]

@dataclass(frozen=True, slots=True)
class FleetSample:
    """What the broker said at ``at`` (epoch seconds)."""

    at: float
    workers: tuple[WorkerInfo, ...]
    depths: Mapping[str, int]  # queue -> attempts queued that no worker holds
    saturation: float


def _queues(workers: Sequence[WorkerInfo]) -> list[str]:
    return sorted({q for w in workers for q in w.queues})


def _done_since(worker: WorkerInfo, base: FleetSample | None, at: float) -> float:
    """Attempts ``worker`` finished since ``base`` (None: per second over its life)."""
    lifetime = worker.done / max(at - worker.started_at, 1e-9)
    if base is None:
        return lifetime
    before = next((w for w in base.workers if w.id == worker.id), None)
    if before is not None:
        return max(0, worker.done - before.done)
    # New since base: what it did, but no more than its rate allows in the interval.
    return min(float(worker.done), lifetime * (at - base.at))


def pools_of(sample: FleetSample, base: FleetSample | None,
             thresholds: HealthThresholds | None = None) -> list[dict[str, Any]]:
    """One entry per queue the sampled workers serve (see the module's docstring)."""
    judged = {w.id: assess(w, sample.at, thresholds) for w in sample.workers}
    health = {worker: h.state for worker, h in judged.items()}
    interval = sample.at - base.at if base is not None else None
    out = []
    for queue in _queues(sample.workers):
        members = [w for w in sample.workers if queue in w.queues]
        counts = {state.value: sum(health[w.id] is state for w in members) for state in Health}
        finished = sum(_done_since(w, base, sample.at) for w in members)
        recent = sum(judged[w.id].recent_done for w in members)
        failed = sum(judged[w.id].recent_failed for w in members)
        out.append({
            "queue": queue, "workers": len(members), **counts,
            "capacity": sum(w.concurrency for w in members if health[w.id] in TAKING_WORK),
            "running": sum(w.running for w in members),
            "queued": sample.depths.get(queue, 0),
            "done": sum(w.done for w in members),
            "recent_done": recent, "recent_failed": failed,
            "error_rate": round(failed / recent, 4) if recent else None,
            "throughput_per_s": round(finished / interval if interval else finished, 3),
            "throughput_over_s": round(interval, 3) if interval else None,
        })
    return out


def read_sample(broker: Broker, clock: Callable[[], float] = time.time) -> FleetSample:
    """The workers, each served queue's depth and the saturation, from ``broker`` (blocking;
    :class:`~corral.errors.BrokenBroker` when it cannot be read)."""
    workers = tuple(broker.workers())
    depths = {q: broker.queue_depth([q]) for q in _queues(workers)}
    return FleetSample(at=clock(), workers=workers, depths=depths,
                       saturation=broker.saturation())
