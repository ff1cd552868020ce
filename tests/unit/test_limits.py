"""Flow control as pure functions: GCRA with a fake clock, breaker transitions by table."""

from __future__ import annotations

import math

import pytest

from corral._limits import (
    Breaker,
    BreakerState,
    BreakerStatus,
    Hold,
    LocalRates,
    RateLimit,
    Refuse,
    ask,
    gcra,
    parse_breaker,
    parse_duration,
    parse_rate,
    parse_rate_limit,
    record,
)

CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


# --------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(("text", "per_second"), [
    ("10/s", 10.0), ("60/m", 1.0), ("3600/h", 1.0), ("2.5/s", 2.5), (" 5 / m ", 5 / 60),
])
def test_rates_are_read_per_second(text, per_second):
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["10/x", "10", "/s", "0/s", "-1/s", "ten/s", 10, None, "10/ss"])
def test_malformed_rates_are_refused(text):
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_a_rate_limit_is_a_rate_or_a_rate_with_a_burst():
    assert parse_rate_limit("10/s") == RateLimit(10.0, 1, "10/s")
    assert parse_rate_limit({"rate": "60/m", "burst": 5}) == RateLimit(1.0, 5, "60/m")
    for bad, message in [({"rate": "1/s", "burst": 0}, "burst"), ({"burst": 2}, "rate"),
                         ({"rate": "1/s", "brust": 2}, "unknown key 'brust'"), (5, "rate")]:
        with pytest.raises(ValueError, match=message):
            parse_rate_limit(bad)


def test_breakers_have_defaults_and_durations_with_units():
    assert parse_breaker({"failures": 5}) == Breaker(5, 60.0, 30.0, 1, "fail")
    assert parse_breaker({"failures": 2, "window": "2m", "reset": "500ms", "half_open": 2,
                          "on_open": "wait"}) == Breaker(2, 120.0, 0.5, 2, "wait")
    assert parse_duration(3) == 3.0
    assert parse_duration("1h") == 3600.0
    for bad, message in [({}, "failures"), ({"failures": 0}, "failures"),
                         ({"failures": 1, "windw": 3}, "did you mean 'window'"),
                         ({"failures": 1, "on_open": "retry"}, "on_open"),
                         ({"failures": 1, "reset": "soon"}, "duration"), ("x", "mapping")]:
        with pytest.raises(ValueError, match=message):
            parse_breaker(bad)


# --------------------------------------------------------------------------- GCRA
def admitted(limit, times):
    """Feed requests at ``times`` (a fake clock); the times at which each one was admitted,
    retrying each exactly at the time GCRA names."""
    tat = -math.inf
    out = []
    for t in times:
        now = t
        while True:
            retry_at, after = gcra(tat, now, limit)
            if retry_at is None:
                tat = after
                out.append(now)
                break
            assert retry_at > now
            now = retry_at
    return out


def test_gcra_spaces_admissions_by_the_interval():
    limit = RateLimit(10.0)  # 10/s, burst 1: one every 0.1 s
    got = admitted(limit, [0.0] * 5)
    assert got == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_gcra_admits_a_burst_then_spaces_the_rest():
    limit = RateLimit(1.0, burst=3)
    assert admitted(limit, [0.0] * 5) == pytest.approx([0.0, 0.0, 0.0, 1.0, 2.0])


def test_gcra_idle_time_restores_the_burst_but_no_more():
    limit = RateLimit(1.0, burst=2)
    # two at once, then a pause long enough for the whole burst, then three at once
    assert admitted(limit, [0, 0, 10, 10, 10]) == pytest.approx([0, 0, 10, 10, 11])


def test_gcra_requests_slower_than_the_rate_are_never_delayed():
    limit = RateLimit(2.0)
    times = [0.0, 0.5, 1.25, 3.0]
    assert admitted(limit, times) == times


def test_local_rates_take_every_limit_or_none():
    rates = LocalRates({"a": RateLimit(1.0), "b": RateLimit(10.0)})
    assert rates.try_acquire(["a", "b"], 0.0) is None
    # b alone is free again at 0.1, but a is not before 1.0: nothing is taken
    assert rates.try_acquire(["a", "b"], 0.5) == pytest.approx(1.0)
    assert rates.try_acquire(["b"], 0.5) is None  # b was not consumed by the refusal above
    assert rates.try_acquire(["a", "b"], 1.0) is None


# --------------------------------------------------------------------------- breakers
CFG = Breaker(failures=2, window=10.0, reset=5.0, half_open=1)
WAIT = Breaker(failures=2, window=10.0, reset=5.0, half_open=1, on_open="wait")
TWO_PROBES = Breaker(failures=1, window=10.0, reset=5.0, half_open=2)


@pytest.mark.parametrize(("cfg", "before", "now", "ok", "probe", "after"), [
    # closed: failures are counted within the window; successes change nothing
    (CFG, BreakerStatus(), 1.0, True, False, BreakerStatus()),
    (CFG, BreakerStatus(), 1.0, None, False, BreakerStatus()),
    (CFG, BreakerStatus(), 1.0, False, False, BreakerStatus(recent=(1.0,))),
    (CFG, BreakerStatus(recent=(1.0,)), 2.0, False, False, BreakerStatus(OPEN, opened_at=2.0)),
    # an old failure has left the window: it does not count
    (CFG, BreakerStatus(recent=(1.0,)), 11.0, False, False, BreakerStatus(recent=(11.0,))),
    # open: late outcomes of attempts from before it opened are ignored
    (CFG, BreakerStatus(OPEN, opened_at=2.0), 3.0, False, False,
     BreakerStatus(OPEN, opened_at=2.0)),
    (CFG, BreakerStatus(OPEN, opened_at=2.0), 3.0, True, False,
     BreakerStatus(OPEN, opened_at=2.0)),
    # half-open: the probe decides
    (CFG, BreakerStatus(HALF, opened_at=2.0, probes=1), 8.0, True, True, BreakerStatus()),
    (CFG, BreakerStatus(HALF, opened_at=2.0, probes=1), 8.0, False, True,
     BreakerStatus(OPEN, opened_at=8.0)),
    (CFG, BreakerStatus(HALF, opened_at=2.0, probes=1), 8.0, None, True,
     BreakerStatus(HALF, opened_at=2.0, probes=0)),
    (CFG, BreakerStatus(HALF, opened_at=2.0, probes=1), 8.0, False, False,
     BreakerStatus(HALF, opened_at=2.0, probes=1)),
    # two probes: both must succeed to close it
    (TWO_PROBES, BreakerStatus(HALF, probes=2), 8.0, True, True,
     BreakerStatus(HALF, probes=1, passed=1)),
    (TWO_PROBES, BreakerStatus(HALF, probes=1, passed=1), 9.0, True, True, BreakerStatus()),
])
def test_record(cfg, before, now, ok, probe, after):
    assert record(cfg, before, now, ok, probe=probe) == after


@pytest.mark.parametrize(("cfg", "before", "now", "verdict", "after", "probe"), [
    (CFG, BreakerStatus(), 0.0, None, BreakerStatus(), False),
    # open, before reset: fail at once, or wait until it half-opens
    (CFG, BreakerStatus(OPEN, opened_at=2.0), 3.0, Refuse(7.0),
     BreakerStatus(OPEN, opened_at=2.0), False),
    (WAIT, BreakerStatus(OPEN, opened_at=2.0), 3.0, Hold(7.0),
     BreakerStatus(OPEN, opened_at=2.0), False),
    # reset has passed: half-open, and this task is the probe
    (CFG, BreakerStatus(OPEN, opened_at=2.0), 7.0, None,
     BreakerStatus(HALF, opened_at=2.0, probes=1), True),
    # the probe slot is taken: wait for its outcome (whatever on_open says)
    (CFG, BreakerStatus(HALF, opened_at=2.0, probes=1), 7.5, Hold(math.inf),
     BreakerStatus(HALF, opened_at=2.0, probes=1), False),
    (TWO_PROBES, BreakerStatus(HALF, probes=1), 7.5, None, BreakerStatus(HALF, probes=2), True),
    (TWO_PROBES, BreakerStatus(HALF, probes=1, passed=1), 7.5, Hold(math.inf),
     BreakerStatus(HALF, probes=1, passed=1), False),
])
def test_ask(cfg, before, now, verdict, after, probe):
    assert ask(cfg, before, now) == (verdict, after, probe)


# --------------------------------------------------------------------------- late wake-ups
def admitted_late(limit, count, late):
    """``count`` requests all waiting from 0; each retry comes ``late`` after the time GCRA
    named (a timer that fires late) and says it is due then. The admission times."""
    tat = -math.inf
    out = []
    for _ in range(count):
        now, due = 0.0 if not out else out[-1], None
        while True:
            retry_at, after = gcra(tat, now, limit, due)
            if retry_at is None:
                tat = after
                out.append(now)
                break
            now, due = retry_at + late, retry_at
    return out


@pytest.mark.parametrize(("limit", "late", "expected"), [
    # on time: the schedule itself
    (RateLimit(10.0), 0.0, [0.0, 0.1, 0.2, 0.3, 0.4]),
    # every wake-up 30 ms late: each admission is 30 ms late, the schedule does not drift
    # (counted at the late time it would be 0, 0.13, 0.26, 0.39, 0.52)
    (RateLimit(10.0), 0.03, [0.0, 0.13, 0.23, 0.33, 0.43]),
    # a burst: the early ones are not held at all; the rest keep the schedule
    (RateLimit(10.0, burst=2), 0.03, [0.0, 0.0, 0.13, 0.23, 0.33]),
])
def test_gcra_late_wakeups_do_not_drift(limit, late, expected):
    assert admitted_late(limit, 5, late) == pytest.approx(expected)


@pytest.mark.parametrize(("tat", "now", "due", "result"), [
    (1.0, 1.05, 1.0, (None, 1.1)),  # 50 ms late for its time: counts at 1.0
    (1.0, 1.05, None, (None, 1.15)),  # a first ask counts when it comes
    (1.0, 1.1, 1.0, (None, 1.2)),  # one whole interval late: counts now, no catching up
    (1.0, 3.0, 1.0, (None, 3.1)),  # a long pause does not buy a burst
    (1.2, 1.05, 1.0, (1.2, 1.2)),  # someone else took the slot meanwhile: wait again
    (0.5, 1.05, 1.0, (None, 1.1)),  # due after the TAT (another limit held it): counts at due
])
def test_gcra_due(tat, now, due, result):
    retry_at, after = gcra(tat, now, RateLimit(10.0), due)
    assert (retry_at, after) == (result[0] if result[0] is None else pytest.approx(result[0]),
                                 pytest.approx(result[1]))


def test_local_rates_count_a_late_retry_at_its_time():
    rates = LocalRates({"a": RateLimit(10.0)})
    assert rates.try_acquire(["a"], 0.0) is None
    assert rates.try_acquire(["a"], 0.01) == pytest.approx(0.1)
    assert rates.try_acquire(["a"], 0.12, due=0.1) is None  # 20 ms late
    assert rates.try_acquire(["a"], 0.15) == pytest.approx(0.2)  # not 0.22


# --------------------------------------------------------------------------- through the gate
def gated_scheduler(n, concurrency, free=0):
    """``n`` tasks under one limit of 10/s, then ``free`` tasks under none."""
    from corral._graph import build_graph
    from corral._options import make_spec
    from corral._scheduler import Scheduler
    from corral._spec import ShellCommand

    specs = [make_spec(f"t{i}", ShellCommand("true"), options={"rate_limit": "a"})
             for i in range(n)]
    specs += [make_spec(f"u{i}", ShellCommand("true")) for i in range(free)]
    return Scheduler(build_graph(specs, rate_limits={"a": "10/s"}), concurrency=concurrency)


def test_the_scheduler_keeps_the_schedule_when_its_timer_fires_late():
    sched = gated_scheduler(5, concurrency=5)
    now, starts = 0.0, []
    while sched.is_active():
        for i in sched.admit(now):
            starts.append(now)
            sched.succeeded(i, now)
        wake = sched.next_wake()
        if wake is not None:
            now = wake + 0.03  # every wake-up 30 ms late
    assert starts == pytest.approx([0.0, 0.13, 0.23, 0.33, 0.43])


def test_a_task_that_also_waited_for_a_slot_counts_when_it_starts():
    sched = gated_scheduler(2, concurrency=1, free=1)  # t0, t1 limited; u0 free
    assert sched.admit(0.0) == [0]
    sched.succeeded(0, 0.0)
    assert sched.admit(0.0) == [2]  # t1 is held until 0.1; u0 takes the slot
    assert sched.admit(0.12) == []  # t1's time has come, but u0 holds the only slot
    sched.succeeded(2, 0.15)
    assert sched.admit(0.15) == [1]
    # t1 waited for a slot, not for a late timer: it counts at 0.15, not at its 0.1
    assert sched.gate.rates.try_acquire(["a"], 0.2) == pytest.approx(0.25)


def test_corral_limit_in_a_task_does_not_drift(monkeypatch):
    from corral import _throttle

    clock = [0.0]

    def late_sleep(seconds):
        clock[0] += seconds + 0.03  # every sleep 30 ms too long

    monkeypatch.setattr(_throttle.time, "sleep", late_sleep)
    entry = _throttle.register(["a"], LocalRates({"a": RateLimit(10.0)}), lambda: clock[0])
    try:
        times = []
        for _ in range(5):
            with corral_limit("a"):
                times.append(clock[0])
    finally:
        _throttle.unregister(entry)
    assert times == pytest.approx([0.0, 0.13, 0.23, 0.33, 0.43])


def corral_limit(name):
    import corral

    return corral.limit(name)


def test_a_wake_up_asks_the_rate_state_once_for_the_tasks_it_releases():
    sched = gated_scheduler(50, concurrency=50)

    class Counting(LocalRates):
        asks = 0

        def try_acquire(self, names, now, due=None):
            Counting.asks += 1
            return super().try_acquire(names, now, due)

    sched.gate.rates = Counting({"a": RateLimit(10.0)})
    now, starts = 0.0, []
    while len(starts) < 5:
        for i in sched.admit(now):
            starts.append(now)
            sched.succeeded(i, now)
        now = sched.next_wake()
    assert starts == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    # each admission round: one ask admits a task, one refuses the next; the other 48 held
    # tasks get that refusal without asking
    assert Counting.asks == 2 * 5
