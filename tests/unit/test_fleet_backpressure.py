"""Backpressure: a worker's factor from its broker's saturation. A table and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.fleet._backpressure import BackpressurePolicy, admitted, factor

P = BackpressurePolicy()

CASES = [
    # (what, saturation, previous factor, factor)
    ("idle broker", 0.1, 1.0, 1.0),
    ("busy but under the band", 0.7, 1.0, 1.0),
    ("in the band, not slowed: stays so", 0.8, 1.0, 1.0),
    ("at 0.85: just starting", 0.85, 1.0, 1.0),
    ("halfway to full", 0.925, 1.0, 0.55),
    ("full", 1.0, 1.0, 0.1),
    ("over full counts as full", 1.7, 1.0, 0.1),
    ("in the band, slowed: stays slowed", 0.8, 0.1, 0.1),
    ("under the band: recovers twice as fast per reading", 0.5, 0.1, 0.2),
    ("recovery stops at 1", 0.5, 0.8, 1.0),
]


@pytest.mark.parametrize(("what", "saturation", "previous", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_factor(what, saturation, previous, expected):
    assert factor(P, saturation, previous) == pytest.approx(expected)


def test_after_full_saturation_it_takes_a_few_readings_to_recover():
    f, seen = factor(P, 1.0), []
    while f < 1.0:
        f = factor(P, 0.0, f)
        seen.append(round(f, 3))
    assert seen == [0.2, 0.4, 0.8, 1.0]


@given(st.floats(0, 2), st.floats(0.1, 1))
def test_the_factor_stays_within_the_floor_and_one(saturation, previous):
    assert P.floor <= factor(P, saturation, previous) <= 1.0


@given(st.floats(0, 1), st.floats(0.1, 1), st.integers(1, 30))
def test_a_steady_saturation_moves_the_factor_one_way_only(saturation, start, readings):
    fs = [start]
    for _ in range(readings):
        fs.append(factor(P, saturation, fs[-1]))
    steps = [b - a for a, b in zip(fs[1:], fs[2:], strict=False)]
    assert all(s >= 0 for s in steps) or all(s <= 0 for s in steps), fs


@pytest.mark.parametrize("bad", [{"low": 0.9}, {"high": 1.0}, {"floor": 0}, {"recovery": 1}])
def test_a_bad_policy_is_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        BackpressurePolicy(**bad)


@pytest.mark.parametrize(("capacity", "f", "expected"),
                         [(20, 1.0, 20), (20, 0.55, 11), (20, 0.1, 2), (4, 0.1, 1), (1, 0.5, 1)])
def test_the_coordinator_admits_its_capacity_times_the_factor_and_at_least_one(
        capacity, f, expected):
    assert admitted(capacity, f) == expected
