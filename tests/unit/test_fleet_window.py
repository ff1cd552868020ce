"""A worker's recent window of finished attempts: against an exact model, with no clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.fleet._window import SLICES, RecentWindow


def test_attempts_leave_the_window_once_it_has_passed():
    w = RecentWindow(300)
    w.add(1000.0, done=10, failed=9, busy_s=5.0)
    w.add(1100.0, done=2, busy_s=1.0)
    got = w.figures(1100.0)
    assert (got.window_s, got.done, got.failed, got.busy_s) == (300.0, 12, 9, 6.0)
    assert (w.figures(1290.0).done, w.figures(1290.0).failed) == (12, 9)  # 290 s: still in
    assert (w.figures(1310.0).done, w.figures(1310.0).failed) == (2, 0)  # 310 s: gone
    assert w.figures(1500.0).done == 0


def test_a_bad_window_is_refused():
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="health window"):
            RecentWindow(bad)


events = st.lists(st.tuples(st.floats(0, 50), st.integers(1, 5), st.integers(0, 5),
                            st.floats(0, 10)), max_size=40)


@given(window=st.floats(1, 600), events=events, later=st.floats(0, 1200))
def test_the_window_holds_what_ended_lately_and_nothing_older(window, events, later):
    """Each event: (seconds after the previous, attempts, failed of them, seconds they ran).
    An attempt counts while younger than the window less a slice, never once a window old:
    the window matches a model that sums the events by slice."""
    w = RecentWindow(window)
    now, seen = 1_000_000.0, []
    for gap, done, failed, busy in events:
        now += gap
        failed = min(failed, done)
        w.add(now, done=done, failed=failed, busy_s=busy)
        seen.append((now, done, failed, busy))
    now += later
    got = w.figures(now)
    slice_s = window / SLICES
    kept = [e for e in seen
            if math.floor(now / slice_s) - math.floor(e[0] / slice_s) < SLICES]
    assert got.done == sum(e[1] for e in kept)
    assert got.failed == sum(e[2] for e in kept)
    assert got.busy_s == pytest.approx(sum(e[3] for e in kept))
    assert 0 <= got.failed <= got.done
    for at, *_ in seen:
        age = now - at
        if age < window - slice_s * 1.0001:
            assert (at, *_) in kept
        if age >= window * 1.0001:
            assert (at, *_) not in kept
