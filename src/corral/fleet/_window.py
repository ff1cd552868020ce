"""What a worker finished lately: the attempts of the last ``window_s`` seconds, for its health.

Pure: the caller passes ``now`` (any steady clock; the worker's is ``time.monotonic``). The
window is cut into :data:`SLICES` slices of ``window_s / SLICES`` seconds, each holding the
attempts that finished in it (count, failures, seconds they ran); a slice is dropped once it
is a whole window old::

    add(now, done, failed, busy_s) ──> slice floor(now / slice_s) += the figures
    figures(now) ──> the sum of the slices newer than ``now - window_s``

So an attempt counts from its end for between ``window_s - slice_s`` and ``window_s`` (5
minutes give or take 10 s, by default), in constant memory however fast the worker goes.

Why a window of the last minutes and not an EWMA with a half-life: "3 of the last 12
attempts failed, in the last 5 minutes" is what an operator reads in ``corral workers`` and can
check against a run's log; its counts are whole attempts, so ``min_samples`` still means that
many attempts; and a worker that finished nothing for a window has no evidence against it and
is healthy again, where an average of past rates only fades as new attempts come.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

__all__ = ["DEFAULT_WINDOW_S", "SLICES", "Recent", "RecentWindow"]

DEFAULT_WINDOW_S = 300.0  # the last 5 minutes: long enough for 10 attempts of most tasks
SLICES = 30  # a slice is 1/30 of the window: 10 s of 5 minutes


@dataclass(frozen=True, slots=True)
class Recent:
    """What finished in the last ``window_s`` seconds."""

    window_s: float
    done: int
    failed: int  # of ``done``, ended in an error
    busy_s: float  # seconds those ``done`` ran, summed


class RecentWindow:
    """The sliding window of one worker's finished attempts (not thread-safe: the worker
    calls it under its lock)."""

    __slots__ = ("_slices", "slice_s", "window_s")

    def __init__(self, window_s: float = DEFAULT_WINDOW_S) -> None:
        if not (window_s > 0 and math.isfinite(window_s)):
            raise ValueError(f"the health window must be > 0 seconds, not {window_s}")
        self.window_s = float(window_s)
        self.slice_s = self.window_s / SLICES
        # [slice index, done, failed, busy_s], oldest first
        self._slices: collections.deque[list[float]] = collections.deque()

    def _drop_old(self, index: int) -> None:
        while self._slices and self._slices[0][0] <= index - SLICES:
            self._slices.popleft()

    def add(self, now: float, *, done: int, failed: int = 0, busy_s: float = 0.0) -> None:
        """``done`` attempts ended at ``now`` (``failed`` of them in an error), having run
        ``busy_s`` seconds in all."""
        if done <= 0:
            return
        index = math.floor(now / self.slice_s)
        self._drop_old(index)
        if self._slices and self._slices[-1][0] >= index:  # same slice (or a clock step back)
            last = self._slices[-1]
            last[1] += done
            last[2] += failed
            last[3] += busy_s
        else:
            self._slices.append([index, done, failed, busy_s])

    def figures(self, now: float) -> Recent:
        """The window's sums at ``now``."""
        self._drop_old(math.floor(now / self.slice_s))
        done = failed = 0
        busy = 0.0
        for _, d, f, b in self._slices:
            done += int(d)
            failed += int(f)
            busy += b
        return Recent(self.window_s, done, failed, busy)
