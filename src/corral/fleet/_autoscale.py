"""The autoscaling policy of a pool of workers: how many it should run, and why.

Pure: the pool supervisor (:mod:`corral.fleet._pool`) measures, this decides. Demand is what
the pool's workers run plus what waits on their queues (its share of the queue depth, when
other workers serve them too: :mod:`corral.fleet._share`); capacity is the pool's worker slots
(workers * concurrency)::

    utilisation = (running + waiting) / (workers * concurrency)

    utilisation > up * target     -> up: enough workers to bring it to the target, at most
                                     ``max_growth`` * as many as now (2x: a burst doubles the
                                     pool per step, it does not jump to the maximum)
    utilisation < down * target   -> down: by half the surplus (rounded up) over the workers
                                     needed to hold the demand at the target
    in between (the hysteresis band, 0.5..1.2 * target by default)  -> hold

Always within ``min_workers..max_workers`` (a pool below its minimum, say after a worker died,
is brought back at once, cooldown or not). After any change, nothing changes again for
``cooldown_s``: the workers just started or stopped have not shown their effect yet, and a
steady load never sees the pool go up and down within a cooldown. Each :class:`Decision`
carries the figures and a one-line reason that the supervisor logs.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = ["Decision", "Direction", "Load", "ScalingPolicy", "decide"]


class Direction(enum.Enum):
    """What a decision does to the pool."""

    UP = "up"  # start workers
    DOWN = "down"  # stop workers (gracefully)
    HOLD = "hold"  # keep it as it is


@dataclass(frozen=True, kw_only=True)
class ScalingPolicy:
    """The pool's bounds and how eagerly it follows the load."""

    min_workers: int = 1
    max_workers: int = 1
    target: float = 0.7  # the utilisation aimed at: headroom for bursts between decisions
    up_at: float = 1.2  # scale up over up_at * target
    down_at: float = 0.5  # scale down under down_at * target
    max_growth: float = 2.0  # one step at most multiplies the pool by this
    cooldown_s: float = 30.0  # after a change, hold this long

    def __post_init__(self) -> None:
        if self.min_workers < 0:
            raise ValueError(f"min_workers must be >= 0, not {self.min_workers}")
        if self.max_workers < max(1, self.min_workers):
            raise ValueError(f"max_workers ({self.max_workers}) must be >= 1 and >= "
                             f"min_workers ({self.min_workers})")
        if not 0 < self.target <= 1:
            raise ValueError(f"target must be within (0, 1], not {self.target}")
        if not 0 <= self.down_at < 1 < self.up_at:
            raise ValueError(f"need 0 <= down_at < 1 < up_at (a band to hold in), not "
                             f"down_at={self.down_at}, up_at={self.up_at}")
        if not self.max_growth > 1:
            raise ValueError(f"max_growth must be > 1, not {self.max_growth}")
        if not self.cooldown_s >= 0:
            raise ValueError(f"cooldown_s must be >= 0, not {self.cooldown_s}")


@dataclass(frozen=True, slots=True)
class Load:
    """What the pool measured: its workers, their slots each, and the demand on them."""

    workers: int  # live workers of the pool (not those stopping)
    concurrency: int  # slots per worker
    running: int  # attempts its workers run
    waiting: float  # its share of the attempts queued on its queues (corral.fleet._share)
    queued: int | None = None  # all attempts queued there (None: ``waiting`` is all of them)

    @property
    def utilisation(self) -> float:
        """Demand over capacity; inf for demand with no capacity at all."""
        capacity = self.workers * self.concurrency
        demand = self.running + self.waiting
        if capacity == 0:
            return math.inf if demand else 0.0
        return demand / capacity


@dataclass(frozen=True, slots=True)
class Decision:
    """How many workers the pool should run, from how many, and why."""

    direction: Direction
    workers: int  # wanted
    current: int
    utilisation: float
    reason: str

    @property
    def change(self) -> int:
        return self.workers - self.current


def decide(policy: ScalingPolicy, load: Load, now: float,
           last_change: float | None = None) -> Decision:
    """The pool's size after ``load`` at ``now`` (seconds, any clock), its last change having
    been at ``last_change`` (None: never)."""
    p, n, u = policy, load.workers, load.utilisation
    waiting = f"{load.waiting:.2f}".rstrip("0").rstrip(".")  # a share may be a fraction
    if load.queued is not None and load.queued != load.waiting:
        waiting += f" of {load.queued} queued"  # its share: other workers serve the queue
    figures = (f"utilisation {u:.2f} (running {load.running} + waiting {waiting} on "
               f"{n} * {load.concurrency} slots), target {p.target:g}")

    def to(wanted: int, reason: str) -> Decision:
        direction = (Direction.UP if wanted > n else Direction.DOWN if wanted < n
                     else Direction.HOLD)
        return Decision(direction, wanted, n, u, f"{reason}: {figures}")

    if n < p.min_workers:
        return to(p.min_workers, f"below the minimum of {p.min_workers}")
    if n > p.max_workers:
        return to(p.max_workers, f"above the maximum of {p.max_workers}")
    high, low = p.up_at * p.target, p.down_at * p.target
    if low <= u <= high:
        return to(n, f"within {low:.2f}..{high:.2f}")
    if last_change is not None and now - last_change < p.cooldown_s:
        return to(n, f"cooling down ({now - last_change:.1f}s of {p.cooldown_s:g}s since "
                     "the last change)")
    # The workers that hold the demand at the target (at least one per ``min_workers``).
    demand = load.running + load.waiting
    needed = max(p.min_workers, math.ceil(demand / (max(1, load.concurrency) * p.target)))
    if u > high:
        wanted = min(needed, math.floor(n * p.max_growth) if n else needed, p.max_workers)
        if wanted <= n:
            return to(n, f"over {high:.2f} but at the maximum of {p.max_workers}")
        return to(wanted, f"over {high:.2f}")
    surplus = n - needed
    if surplus <= 0:  # under the band, yet every worker is needed (the minimum)
        return to(n, f"under {low:.2f} but at the minimum of {p.min_workers}")
    return to(n - math.ceil(surplus / 2), f"under {low:.2f}, half the surplus of {surplus}")
