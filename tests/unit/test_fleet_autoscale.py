"""The pool's autoscaling policy: a table of loads and decisions, and properties under steady
and changing load. No clock: ``now`` is a number."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.fleet._autoscale import Direction, Load, ScalingPolicy, decide

P = ScalingPolicy(min_workers=1, max_workers=8, target=0.5, cooldown_s=30)
UP, DOWN, HOLD = Direction.UP, Direction.DOWN, Direction.HOLD

CASES = [
    # (what, workers, running, waiting, last change (s ago, None: never), wanted, direction)
    ("idle at the minimum", 1, 0, 0, None, 1, HOLD),
    ("within the band (0.25..0.6)", 2, 2, 0, None, 2, HOLD),
    ("at the top of the band", 5, 6, 0, None, 5, HOLD),
    ("just over the band: to the target", 5, 6, 1, None, 7, UP),
    ("a burst doubles the pool, no more", 2, 4, 100, None, 4, UP),
    ("the queue is demand: nothing runs yet", 1, 0, 3, None, 2, UP),
    ("never over the maximum", 6, 12, 100, None, 8, UP),
    ("at the maximum: hold", 8, 16, 100, None, 8, HOLD),
    ("no load: half the surplus", 8, 0, 0, None, 4, DOWN),
    ("then half again", 4, 0, 0, None, 2, DOWN),
    ("and the last one", 2, 0, 0, None, 1, DOWN),
    ("an odd surplus rounds up", 4, 1, 0, None, 2, DOWN),
    ("a light load: half the surplus over what it needs (3)", 8, 3, 0, None, 5, DOWN),
    ("under the band at the minimum: hold", 1, 0, 0, 1, 1, HOLD),
    ("cooling down: no up", 2, 4, 100, 10, 2, HOLD),
    ("cooling down: no down", 8, 0, 0, 29.9, 8, HOLD),
    ("cooled down", 8, 0, 0, 30, 4, DOWN),
    ("below the minimum: back at once, cooldown or not", 0, 0, 0, 1, 1, UP),
    ("above the maximum: down at once", 9, 18, 0, 1, 8, DOWN),
]


@pytest.mark.parametrize(("what", "n", "running", "waiting", "ago", "wanted", "direction"),
                         CASES, ids=[c[0] for c in CASES])
def test_decisions(what, n, running, waiting, ago, wanted, direction):
    now = 1_000.0
    d = decide(P, Load(n, 2, running, waiting), now, None if ago is None else now - ago)
    assert (d.workers, d.direction, d.current) == (wanted, direction, n), d.reason
    assert d.change == wanted - n


def test_each_decision_says_why_with_its_figures():
    d = decide(P, Load(2, 2, 4, 100), 0.0)
    assert d.reason == ("over 0.60: utilisation 26.00 (running 4 + waiting 100 on 2 * 2 "
                        "slots), target 0.5")
    assert "cooling down (10.0s of 30s" in decide(P, Load(2, 2, 4, 100), 10.0, 0.0).reason
    assert "half the surplus of 7" in decide(P, Load(8, 2, 0, 0), 0.0).reason
    assert "at the maximum of 8" in decide(P, Load(8, 2, 16, 100), 0.0).reason


def test_a_pool_of_no_workers_with_a_minimum_of_zero_starts_for_demand_only():
    p = ScalingPolicy(min_workers=0, max_workers=4, target=0.5)
    assert decide(p, Load(0, 2, 0, 0), 0.0).workers == 0
    assert decide(p, Load(0, 2, 0, 3), 0.0).workers == 3


@pytest.mark.parametrize(("bad", "word"), [
    ({"min_workers": -1}, "min_workers"), ({"min_workers": 3, "max_workers": 2}, "max_workers"),
    ({"max_workers": 0}, "max_workers"), ({"target": 0}, "target"), ({"target": 1.5}, "target"),
    ({"up_at": 1.0}, "up_at"), ({"down_at": 1.0}, "down_at"), ({"max_growth": 1}, "growth"),
    ({"cooldown_s": -1}, "cooldown")])
def test_a_bad_policy_is_refused(bad, word):
    with pytest.raises(ValueError, match=word):
        ScalingPolicy(**{"max_workers": 4, **bad})


policies = st.builds(
    lambda lo, extra, target, cooldown: ScalingPolicy(
        min_workers=lo, max_workers=max(1, lo + extra), target=target, cooldown_s=cooldown),
    st.integers(0, 4), st.integers(0, 12), st.floats(0.1, 1.0), st.floats(0, 120))


def simulate(policy, concurrency, demands, steps):
    """Run the policy over (demand, seconds since the previous step) pairs; the pool's
    workers run what they can of the demand, the rest waits. Returns (now, decision)s."""
    n, now, last, out = policy.min_workers, 0.0, None, []
    for demand, dt in zip(demands, steps, strict=True):
        now += dt
        running = min(demand, n * concurrency)
        d = decide(policy, Load(n, concurrency, running, demand - running), now, last)
        if d.direction is not HOLD:
            last, n = now, d.workers
        out.append((now, d))
    return out


@settings(max_examples=300, deadline=None)
@given(policies, st.integers(1, 8), st.integers(0, 200),
       st.lists(st.floats(0.1, 60), min_size=1, max_size=60))
def test_a_steady_load_never_flips_direction(policy, concurrency, demand, steps):
    changes = [d.direction for _, d in simulate(policy, concurrency, [demand] * len(steps),
                                                steps) if d.direction is not HOLD]
    assert UP not in changes or DOWN not in changes, changes


@settings(max_examples=300, deadline=None)
@given(policies, st.integers(1, 8),
       st.lists(st.tuples(st.integers(0, 200), st.floats(0.1, 60)), min_size=1, max_size=60))
def test_the_pool_changes_at_most_once_per_cooldown_within_its_bounds(policy, concurrency,
                                                                       load):
    decisions = simulate(policy, concurrency, [d for d, _ in load], [s for _, s in load])
    changes = [(now, d) for now, d in decisions if d.direction is not HOLD]
    for (t0, _), (t1, d1) in zip(changes, changes[1:], strict=False):
        assert t1 - t0 >= policy.cooldown_s, (t0, t1, d1.reason)
    for _, d in decisions:
        assert policy.min_workers <= d.workers <= policy.max_workers
