"""A worker's health from what the registry holds and ``now``: a table, no clock."""

from __future__ import annotations

import pytest

from corral.fleet._broker import WorkerInfo
from corral.fleet._health import Health, HealthThresholds, assess

NOW = 1_000_000.0
T = HealthThresholds(heartbeat_timeout=10, max_error_rate=0.5, max_latency_s=2.0,
                     min_samples=10, starting_s=10)


def info(*, started=100.0, beat=1.0, done=0, failed=0, busy=0.0, state="running"):
    """A worker that started ``started`` s ago and last beat ``beat`` s ago."""
    return WorkerInfo(id="h-1-abcd", host="h", pid=1, queues=("default",), concurrency=4,
                      done=done, failed=failed, busy_s=busy, started_at=NOW - started,
                      last_beat=NOW - beat, state=state)


CASES = [
    # (what, the registry's row, state, error rate, mean latency)
    ("just started", info(started=2), Health.STARTING, None, None),
    ("idle since long ago, finished nothing", info(started=60), Health.HEALTHY, None, None),
    ("a few attempts, one failed: not judged yet", info(done=3, failed=3, busy=30),
     Health.HEALTHY, 1.0, 10.0),
    ("enough attempts, few failures, quick", info(done=20, failed=2, busy=10),
     Health.HEALTHY, 0.1, 0.5),
    ("an error rate at the threshold is fine", info(done=10, failed=5, busy=1),
     Health.HEALTHY, 0.5, 0.1),
    ("an error rate over the threshold", info(done=10, failed=6, busy=1),
     Health.DEGRADED, 0.6, 0.1),
    ("slow attempts", info(done=10, busy=25), Health.DEGRADED, 0.0, 2.5),
    ("silent past the timeout", info(beat=10.5, done=20, busy=1), Health.UNHEALTHY,
     0.0, 0.05),
    ("silent just within the timeout", info(beat=10.0), Health.HEALTHY, None, None),
    ("listed as gone by the broker", info(state="gone"), Health.UNHEALTHY, None, None),
    ("stopping", info(state="stopping", done=10, failed=10), Health.STOPPING, 1.0, 0.0),
    ("stopping but silent: dead first", info(state="stopping", beat=30), Health.UNHEALTHY,
     None, None),
    ("starting but silent (never beat again)", info(started=12, beat=11), Health.UNHEALTHY,
     None, None),
]


@pytest.mark.parametrize(("what", "row", "state", "rate", "mean"), CASES,
                         ids=[c[0] for c in CASES])
def test_health_from_the_registry(what, row, state, rate, mean):
    h = assess(row, NOW, T)
    assert (h.state, h.error_rate, h.mean_latency_s) == (state, rate, mean), h.reason
    assert h.worker == row.id
    assert h.silent_s == NOW - row.last_beat


def test_without_a_latency_threshold_slow_workers_stay_healthy():
    h = assess(info(done=10, busy=1_000), NOW, HealthThresholds(min_samples=10))
    assert h.state is Health.HEALTHY


def test_each_judgement_says_why():
    assert "6 of 10 attempts failed" in assess(info(done=10, failed=6), NOW, T).reason
    assert "2.50s on average" in assess(info(done=10, busy=25), NOW, T).reason
    assert "no heartbeat for 30.0s" in assess(info(beat=30), NOW, T).reason
    assert assess(info(beat=30), NOW, T).as_dict()["state"] == "unhealthy"


@pytest.mark.parametrize("bad", [
    {"heartbeat_timeout": 0}, {"max_error_rate": 1.5}, {"max_latency_s": 0},
    {"min_samples": 0}])
def test_bad_thresholds_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        HealthThresholds(**bad)


def windowed(*, done=0, failed=0, busy=0.0, recent_done=0, recent_failed=0, recent_busy=0.0,
             window=300.0):
    """A worker that reports a window of the last ``window`` s, beside its lifetime totals."""
    return WorkerInfo(id="h-1-abcd", host="h", pid=1, queues=("default",), concurrency=4,
                      done=done, failed=failed, busy_s=busy, started_at=NOW - 3600,
                      last_beat=NOW - 1, window_s=window, recent_done=recent_done,
                      recent_failed=recent_failed, recent_busy_s=recent_busy)


WINDOWED = [
    # (what, the row, state, error rate, mean latency): judged on the window, not the life
    ("failed a lot long ago, nothing lately: healthy again",
     windowed(done=100, failed=90, busy=10), Health.HEALTHY, None, None),
    ("failed a lot long ago, fine lately",
     windowed(done=100, failed=90, busy=10, recent_done=20, recent_busy=2), Health.HEALTHY,
     0.0, 0.1),
    ("fine for hours, failing lately",
     windowed(done=1000, failed=10, busy=100, recent_done=12, recent_failed=9, recent_busy=1.2),
     Health.DEGRADED, 0.75, 0.1),
    ("slow lately", windowed(done=1000, busy=100, recent_done=10, recent_busy=30),
     Health.DEGRADED, 0.0, 3.0),
    ("failing lately, but too few to judge",
     windowed(done=1000, recent_done=9, recent_failed=9, recent_busy=0.9), Health.HEALTHY,
     1.0, 0.1),
]


@pytest.mark.parametrize(("what", "row", "state", "rate", "mean"), WINDOWED,
                         ids=[c[0] for c in WINDOWED])
def test_health_is_judged_on_the_recent_window(what, row, state, rate, mean):
    h = assess(row, NOW, T)
    assert (h.state, h.error_rate) == (state, rate), h.reason
    assert h.mean_latency_s == (mean if mean is None else pytest.approx(mean))
    assert (h.done, h.failed) == (row.done, row.failed)  # the lifetime figures, as they are
    assert (h.window_s, h.recent_done, h.recent_failed) == (300.0, row.recent_done,
                                                          row.recent_failed)


def test_a_judgement_names_its_window_or_says_it_has_none():
    h = assess(windowed(recent_done=12, recent_failed=9, recent_busy=1), NOW, T)
    assert h.reason == "9 of 12 attempts failed in the last 5m (75% > 50%)"
    assert assess(windowed(recent_done=1, window=90), NOW, T).reason == \
        "beating, 1 finished in the last 90s"
    old = assess(info(done=10, failed=6), NOW, T)  # an older corral's worker: no window
    assert "over its life" in old.reason
    assert old.as_dict()["window_s"] is None
