"""A worker's health, judged from what the workers' registry holds and the time now.

Pure: no broker, no clock. The registry (:class:`~corral.fleet._broker.WorkerInfo`) says
when the worker started and last beat, and of the attempts it finished in its recent window
(the last ``window_s`` seconds, 5 minutes by default: :mod:`corral.fleet._window`) how many
failed and how long they ran; :func:`assess` turns that and ``now`` into one of five states,
first match wins::

    silent past the heartbeat timeout (or listed as gone)   -> unhealthy
    stopping (Ctrl-C or SIGTERM: finishing, then handing back) -> stopping
    nothing finished yet, younger than ``starting_s``        -> starting
    >= ``min_samples`` finished in the window, and their
       error rate or mean time over its threshold            -> degraded
    otherwise                                                -> healthy

Judged on a window, not the worker's whole life: one that failed a lot an hour ago is healthy
again once those attempts leave its window, and one that just went bad shows it within
``min_samples`` attempts. Judged only once ``min_samples`` attempts finished in the window, so
one early failure does not mark a worker degraded. A worker of an older corral reports no
window (``window_s`` 0): its lifetime figures are judged, and its reason says so.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from corral.fleet._broker import WorkerInfo

__all__ = ["TAKING_WORK", "Health", "HealthThresholds", "WorkerHealth", "assess", "span"]


class Health(enum.Enum):
    """A worker's health state."""

    STARTING = "starting"  # registered, nothing finished yet
    HEALTHY = "healthy"  # beating, errors and latency within their thresholds
    DEGRADED = "degraded"  # beating, but its error rate or mean latency is over a threshold
    UNHEALTHY = "unhealthy"  # missed its heartbeats: taken for dead, its work reclaimed
    STOPPING = "stopping"  # asked to stop: finishing what runs, taking nothing new


# The states whose workers take new work: their slots are a queue's live capacity.
TAKING_WORK = frozenset({Health.STARTING, Health.HEALTHY, Health.DEGRADED})


@dataclass(frozen=True, kw_only=True)
class HealthThresholds:
    """Where healthy ends. ``max_latency_s`` None: latency never degrades a worker (tasks
    differ too much for one default to mean anything)."""

    heartbeat_timeout: float = 10.0  # the broker's: a worker silent this long is dead
    max_error_rate: float = 0.5  # failed / finished; above it: degraded
    max_latency_s: float | None = None  # mean seconds per finished attempt; above: degraded
    min_samples: int = 10  # attempts finished in the window before rate and mean are judged
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
    """A worker's health at one moment, with the figures it was judged on and why.
    ``error_rate`` and ``mean_latency_s`` are over its window (``window_s``; None: its
    lifetime, an older worker's), ``done`` and ``failed`` over its life."""

    worker: str
    state: Health
    reason: str
    silent_s: float  # since its last beat
    done: int  # lifetime
    failed: int  # lifetime
    error_rate: float | None  # over the window; None: nothing finished in it
    mean_latency_s: float | None  # over the window; None: nothing finished in it
    window_s: float | None = None  # None: the worker reports no window (lifetime figures)
    recent_done: int = 0
    recent_failed: int = 0

    def as_dict(self) -> dict[str, object]:
        """For ``--json`` and the web API."""
        return {"state": self.state.value, "reason": self.reason,
                "silent_s": round(self.silent_s, 3), "window_s": self.window_s,
                "recent_done": self.recent_done, "recent_failed": self.recent_failed,
                "error_rate": self.error_rate, "mean_latency_s": self.mean_latency_s,
                "done": self.done, "failed": self.failed}


def assess(info: WorkerInfo, now: float,
           thresholds: HealthThresholds | None = None) -> WorkerHealth:
    """The health of the worker ``info`` describes at ``now`` (epoch seconds)."""
    t = thresholds or HealthThresholds()
    silent = max(0.0, now - info.last_beat)
    windowed = info.window_s > 0
    if windowed:
        n, bad, busy = info.recent_done, info.recent_failed, info.recent_busy_s
        over = f"in the last {span(info.window_s)}"
    else:
        n, bad, busy = info.done, info.failed, info.busy_s
        over = "over its life (it reports no window: an older corral)"
    rate = bad / n if n else None
    mean = busy / n if n else None

    def judged(state: Health, reason: str) -> WorkerHealth:
        return WorkerHealth(info.id, state, reason, silent, info.done, info.failed, rate, mean,
                            info.window_s if windowed else None, n, bad)

    if info.state == "gone" or silent > t.heartbeat_timeout:
        return judged(Health.UNHEALTHY, f"no heartbeat for {silent:.1f}s (timeout "
                                        f"{t.heartbeat_timeout:g}s)")
    if info.state == "stopping":
        return judged(Health.STOPPING, "asked to stop: finishing what runs")
    if info.done == 0 and now - info.started_at < t.starting_s:
        return judged(Health.STARTING, f"started {max(0.0, now - info.started_at):.1f}s ago, "
                                       "nothing finished yet")
    if n >= t.min_samples and rate is not None and mean is not None:
        if rate > t.max_error_rate:
            return judged(Health.DEGRADED, f"{bad} of {n} attempts failed {over} "
                                           f"({rate:.0%} > {t.max_error_rate:.0%})")
        if t.max_latency_s is not None and mean > t.max_latency_s:
            return judged(Health.DEGRADED, f"attempts took {mean:.2f}s on average {over} "
                                           f"(> {t.max_latency_s:g}s)")
    return judged(Health.HEALTHY, f"beating, {n} finished {over}" if n < t.min_samples
                  else f"{n} finished {over}, {rate:.0%} failed")


def span(seconds: float) -> str:
    """``300`` as ``5m``, ``90`` as ``90s``."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
