"""A worker's health, judged from what the workers' registry holds and the time now.

Pure: no broker, no clock. The registry (:class:`~corral.fleet._broker.WorkerInfo`) says
when the worker started and last beat, how many attempts it finished, how many of those
failed and how long they ran in all; :func:`assess` turns that and ``now`` into one of five
states, first match wins::

    silent past the heartbeat timeout (or listed as gone)   -> unhealthy
    stopping (Ctrl-C or SIGTERM: finishing, then handing back) -> stopping
    nothing finished yet, younger than ``starting_s``        -> starting
    >= ``min_samples`` finished, and the error rate or the
       mean time per attempt over its threshold              -> degraded
    otherwise                                                -> healthy

The error rate and the mean time are over the worker's whole life (the registry keeps
totals, not windows), and judged only once ``min_samples`` attempts finished, so one early
failure does not mark a worker degraded.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from corral.fleet._broker import WorkerInfo

__all__ = ["Health", "HealthThresholds", "WorkerHealth", "assess"]


class Health(enum.Enum):
    """A worker's health state."""

    STARTING = "starting"  # registered, nothing finished yet
    HEALTHY = "healthy"  # beating, errors and latency within their thresholds
    DEGRADED = "degraded"  # beating, but its error rate or mean latency is over a threshold
    UNHEALTHY = "unhealthy"  # missed its heartbeats: taken for dead, its work reclaimed
    STOPPING = "stopping"  # asked to stop: finishing what runs, taking nothing new


@dataclass(frozen=True, kw_only=True)
class HealthThresholds:
    """Where healthy ends. ``max_latency_s`` None: latency never degrades a worker (tasks
    differ too much for one default to mean anything)."""

    heartbeat_timeout: float = 10.0  # the broker's: a worker silent this long is dead
    max_error_rate: float = 0.5  # failed / finished; above it: degraded
    max_latency_s: float | None = None  # mean seconds per finished attempt; above: degraded
    min_samples: int = 10  # finished attempts before the rate and the mean are judged
    starting_s: float = 10.0  # how long a worker that finished nothing counts as starting

    def __post_init__(self) -> None:
        if not self.heartbeat_timeout > 0:
            raise ValueError(f"heartbeat_timeout must be > 0, not {self.heartbeat_timeout}")
        if not 0 <= self.max_error_rate <= 1:
            raise ValueError(f"max_error_rate must be within 0..1, not {self.max_error_rate}")
        if self.max_latency_s is not None and not self.max_latency_s > 0:
            raise ValueError(f"max_latency_s must be > 0 (or None), not {self.max_latency_s}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, not {self.min_samples}")


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """A worker's health at one moment, with the figures it was judged on and why."""

    worker: str
    state: Health
    reason: str
    silent_s: float  # since its last beat
    done: int
    failed: int
    error_rate: float | None  # None: nothing finished
    mean_latency_s: float | None  # None: nothing finished

    def as_dict(self) -> dict[str, object]:
        """For ``--json`` and the web API."""
        return {"state": self.state.value, "reason": self.reason,
                "silent_s": round(self.silent_s, 3), "done": self.done, "failed": self.failed,
                "error_rate": self.error_rate, "mean_latency_s": self.mean_latency_s}


def assess(info: WorkerInfo, now: float,
           thresholds: HealthThresholds | None = None) -> WorkerHealth:
    """The health of the worker ``info`` describes at ``now`` (epoch seconds)."""
    t = thresholds or HealthThresholds()
    silent = max(0.0, now - info.last_beat)
    rate = info.failed / info.done if info.done else None
    mean = info.busy_s / info.done if info.done else None

    def judged(state: Health, reason: str) -> WorkerHealth:
        return WorkerHealth(info.id, state, reason, silent, info.done, info.failed, rate, mean)

    if info.state == "gone" or silent > t.heartbeat_timeout:
        return judged(Health.UNHEALTHY, f"no heartbeat for {silent:.1f}s (timeout "
                                        f"{t.heartbeat_timeout:g}s)")
    if info.state == "stopping":
        return judged(Health.STOPPING, "asked to stop: finishing what runs")
    if info.done == 0 and now - info.started_at < t.starting_s:
        return judged(Health.STARTING, f"started {max(0.0, now - info.started_at):.1f}s ago, "
                                       "nothing finished yet")
    if info.done >= t.min_samples and rate is not None and mean is not None:
        if rate > t.max_error_rate:
            return judged(Health.DEGRADED, f"{info.failed} of {info.done} attempts failed "
                                           f"({rate:.0%} > {t.max_error_rate:.0%})")
        if t.max_latency_s is not None and mean > t.max_latency_s:
            return judged(Health.DEGRADED, f"attempts take {mean:.2f}s on average "
                                           f"(> {t.max_latency_s:g}s)")
    return judged(Health.HEALTHY, "beating" if info.done < t.min_samples
                  else f"{info.done} finished, {rate:.0%} failed")
