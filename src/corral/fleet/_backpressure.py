"""Backpressure: how much a worker slows down while its broker is saturated.

Pure. A worker reads its broker's saturation (:meth:`Broker.saturation`: the share of the
server's connections in use, or of its memory limit, whichever is higher) once per beat, and
turns it into a *factor* between ``floor`` and 1::

    saturation >= high (0.85)   factor = 1 - (saturation - high) / (1 - high) * (1 - floor):
                                1 at 0.85, 0.1 (the floor) at 1.0
    low <= saturation < high    the factor stays as it was (hysteresis: no flapping about 0.85)
    saturation < low (0.75)     the factor recovers: times ``recovery`` (2) per beat, up to 1

The worker then claims at most ``free slots * factor`` attempts at a time (at least one), and
waits ``tick * (1 / factor - 1)`` between claims: at the floor, a tenth of the batch, about two
seconds apart instead of back to back.

The coordinator (:mod:`corral.fleet._coordinator`) follows the same policy, reading its
broker's saturation and its store's connection pool's (the higher) about once a second: each
fleet executor then admits at most :func:`admitted` attempts at once, the run's concurrency
times the factor (at least one).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BackpressurePolicy", "admitted", "factor"]


@dataclass(frozen=True, kw_only=True)
class BackpressurePolicy:
    """Where a worker starts slowing down, how far, and how fast it recovers."""

    high: float = 0.85  # saturation from which it slows down
    low: float = 0.75  # saturation under which it speeds up again
    floor: float = 0.1  # the slowest: a tenth of the batch
    recovery: float = 2.0  # per reading under ``low``, the factor grows at most this much

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high < 1:
            raise ValueError(f"need 0 < low <= high < 1, not low={self.low}, high={self.high}")
        if not 0 < self.floor <= 1:
            raise ValueError(f"floor must be within (0, 1], not {self.floor}")
        if not self.recovery > 1:
            raise ValueError(f"recovery must be > 1, not {self.recovery}")


def factor(policy: BackpressurePolicy, saturation: float, previous: float = 1.0) -> float:
    """The factor after reading ``saturation`` (0..1; above 1 counts as 1), the last one
    having been ``previous``."""
    p = policy
    if saturation >= p.high:
        over = (min(saturation, 1.0) - p.high) / (1.0 - p.high)
        return max(p.floor, 1.0 - over * (1.0 - p.floor))
    if saturation >= p.low:
        return previous
    return min(1.0, max(p.floor, previous) * p.recovery)


def admitted(capacity: int, factor: float) -> int:
    """How many of ``capacity`` attempts may be in flight at ``factor``: at least one, so a
    slowed run still moves."""
    return max(1, int(capacity * factor))
