"""Fleet-wide flow control, the same on every broker that keeps it (Redis, PostgreSQL): the
server's atomic step agrees with the pure limiter, processes sharing a limit get the combined
rate (counted, with a fake or frozen clock), ``corral.limit`` in a task on a real
``corral worker`` takes the state its coordinator shares, and runs share a circuit breaker
(transitions by table, probes counted across processes).

Nothing here asserts how long anything took: the limits are either driven by a fake clock or
so slow (1/h) that what a burst allows is a count.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap

import pytest
from tests.helpers.fleet_tasks import broken, limited_calls, limited_calls_async, starts
from tests.helpers.redis import start_worker, stop_worker, worker_env

from corral import DAG, TaskState
from corral._errors import CircuitOpen
from corral._limits import (
    Breaker,
    BreakerState,
    BreakerStatus,
    Hold,
    LocalRates,
    RateLimit,
    Refuse,
    parse_rate_limit,
)
from corral.fleet.limits import shared_flow, worker_limits
from corral.fleet.limits_redis import LOST_PROBE_S

LIMITS = {"a": RateLimit(10.0), "b": RateLimit(2.0, burst=3)}


def test_the_server_answers_as_the_pure_limiter_does(flow):
    shared, _ = flow.shared(LIMITS, server_time=False)
    local = LocalRates(LIMITS)
    rng = random.Random(7)
    now, due = 0.0, None
    for _ in range(300):
        names = rng.choice([["a"], ["b"], ["a", "b"], ["b", "a"]])
        now += rng.choice([0.0, 0.01, 0.05, 0.1, 0.5])
        expected = local.try_acquire(names, now, due)
        got = shared.try_acquire(names, now, due)
        assert (got is None) == (expected is None), (names, now, due)
        if expected is not None:
            assert got == pytest.approx(expected, abs=1e-9)
        # the next ask comes back for this retry time, sometimes late (no drift), sometimes not
        due = None
        if expected is not None and rng.random() < 0.7:
            due = expected
            now = expected + rng.choice([0.0, 0.003, 0.2])


def test_on_the_servers_clock_a_retry_time_is_on_the_callers(flow):
    rates, _ = flow.shared({"api": parse_rate_limit("1/h")})
    assert rates.try_acquire(["api"], 5.0) is None
    retry_at = rates.try_acquire(["api"], 5.0)
    assert retry_at is not None
    assert 5.0 + 3000 < retry_at <= 5.0 + 3600  # an hour on the caller's clock, not epoch


# Each asker opens the broker as corral does and waits for the go file, so that both
# processes ask together.
ASKER = textwrap.dedent("""
    import json, os, sys, time
    from corral._limits import parse_rate_limit
    from corral.fleet._broker import open_broker
    from corral.fleet.limits import shared_flow

    url, go, limit, server_time, times = sys.argv[1:6]
    broker = open_broker(url)
    rates, _ = shared_flow(broker, {"api": parse_rate_limit(json.loads(limit))}, "run",
                           breakers=False)
    rates.server_time = server_time == "1"
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    taken = 0
    for now in json.loads(times):
        now = time.monotonic() if now is None else now
        taken += rates.try_acquire(["api"], now) is None
    print(taken)
    broker.close()
""")

PROBER = textwrap.dedent("""
    import os, sys, time
    from corral._limits import Breaker
    from corral.fleet._broker import open_broker
    from corral.fleet.limits import shared_flow

    url, go = sys.argv[1:3]
    broker = open_broker(url)
    _, book = shared_flow(broker, {}, "run", breakers=True)
    book.server_time = False
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    cfg = Breaker(failures=1, window=10.0, reset=5.0, half_open=2)
    print(sum(book.ask("svc", cfg, 100.0)[2] for _ in range(30)))
    broker.close()
""")


def _together(script, args, n, tmp_path):
    """Run ``n`` copies of ``script`` that start asking at once; what each printed last."""
    go = tmp_path / "go"
    url, *rest = args  # each script takes the broker's URL, the go file, then the rest
    procs = [subprocess.Popen([sys.executable, "-c", script, url, str(go), *rest],
                              env=worker_env(), stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return [int(o) for o in outs]


def _ask_in_two_processes(flow, tmp_path, limit, times, *, server_time):
    return _together(ASKER, [flow.url, json.dumps(limit), "1" if server_time else "0",
                             json.dumps(times)], 2, tmp_path)


def test_two_processes_on_one_fake_clock_share_the_limit(flow, tmp_path):
    # 4/s with a burst of 4 (binary fractions: exact): at 0, four (the TAT moves to 1.0); at
    # 2.0, four more. Each process alone would take eight; together they take eight, however
    # their asks interleave.
    times = [0.0] * 50 + [2.0] * 50
    taken = _ask_in_two_processes(flow, tmp_path, {"rate": "4/s", "burst": 4}, times,
                                  server_time=False)
    assert sum(taken) == 8, taken


def test_two_processes_on_the_servers_clock_share_the_limit(flow, tmp_path):
    # 1/h with a burst of 3: within the test nothing refills, so three in all, not six.
    taken = _ask_in_two_processes(flow, tmp_path, {"rate": "1/h", "burst": 3}, [None] * 20,
                                  server_time=True)
    assert sum(taken) == 3, taken


def test_a_run_publishes_its_limits_for_its_workers(flow):
    rates, _ = flow.shared({"api": parse_rate_limit({"rate": "1/h", "burst": 2})},
                           run_id="run-1")
    fleet = worker_limits(flow.broker)
    assert fleet is not None
    found, _clock = fleet.resolver("run-1")("api")
    assert found.limits == {"api": RateLimit(1 / 3600, 2, "1/h")}
    assert found.try_acquire(["api"], 0.0) is None
    assert rates.try_acquire(["api"], 0.0) is None  # the burst's second, shared
    assert found.try_acquire(["api"], 0.0) is not None
    with pytest.raises(Exception, match="declares no rate limit 'nope'"):
        fleet.resolver("run-1")("nope")


def test_limits_are_shared_across_runs_and_their_workers(flow):
    hourly = {"api": {"rate": "1/h", "burst": 5}}
    worker = start_worker(flow.url)
    try:
        first = DAG(rate_limits=hourly)
        # one taken by the coordinator's scheduler, three by tasks on the worker
        first.add(limited_calls, "api", 0, id="gated", options={"rate_limit": "api"})
        first.add(limited_calls, "api", 2, id="calls")
        first.add(limited_calls_async, "api", 1, id="acalls", options={"executor": "async"})
        first.add(limited_calls, "nope", 1, id="undeclared", options={"allow_failure": True})
        result = first.run(broker=flow.url, handle_signals=False, log_dir=None)
    finally:
        stop_worker(worker)
    assert result["gated"].state is TaskState.SUCCEEDED
    assert result["calls"].value == 2
    assert result["acalls"].value == 1
    assert "declares no rate limit 'nope'" in str(result["undeclared"].error)
    now, tat = flow.tat("api")
    assert now + 3 * 3600 < tat <= now + 4 * 3600 + 1  # four of a burst of five, an hour each
    # another run (another coordinator) on the same broker finds them taken
    other, _ = flow.shared({"api": parse_rate_limit(hourly["api"])}, run_id="other")
    assert other.try_acquire(["api"], 0.0) is None  # the burst's last one
    retry_at = other.try_acquire(["api"], 0.0)
    assert retry_at is not None
    assert retry_at > 1800  # about an hour on this caller's clock


def test_a_broker_of_another_kind_keeps_no_flow_control():
    class Memory:
        url = "memory://"

    assert worker_limits(Memory()) is None
    assert shared_flow(Memory(), {"api": RateLimit(1.0)}, "run", breakers=True) == (None, None)


# --------------------------------------------------------------------------- breakers
CFG = Breaker(failures=2, window=10.0, reset=5.0, half_open=1)
OPEN, HALF, CLOSED = BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED


def test_two_runs_share_a_breakers_transitions(flow):
    _, a = flow.shared(server_time=False)  # two runs' coordinators
    _, b = flow.shared(server_time=False)
    steps = [  # (book, outcome: ok or "ask", now, probe, expected state, expected verdict)
        (a, False, 1.0, False, CLOSED, None),
        (b, False, 2.0, False, OPEN, None),  # a's failure and b's: two within the window
        (a, "ask", 3.0, False, OPEN, Refuse(7.0)),  # a learns it from b
        (b, "ask", 7.0, True, HALF, None),  # reset passed: b's task is the probe
        (a, "ask", 7.5, False, HALF, Hold(float("inf"))),  # one probe at a time, fleet-wide
        (b, True, 8.0, True, CLOSED, None),  # b's probe succeeded: closed for a too
        (a, "ask", 8.5, False, CLOSED, None),
    ]
    for book, outcome, now, probe, state, verdict in steps:
        if outcome == "ask":
            got, status, probed = book.ask("svc", CFG, now)
            assert (got, probed) == (verdict, probe), now
        else:
            status = book.record("svc", CFG, now, outcome, probe=probe)
        assert status.state is state, (now, status)


def test_a_lost_probe_is_forgotten(flow):
    _, book = flow.shared(server_time=False)
    flow.put_breaker("svc", {"state": "half_open", "recent": [], "opened_at": 0.0,
                             "probes": 1, "passed": 0})
    assert book.ask("svc", CFG, 6.0)[0] == Hold(float("inf"))  # the probe may still run
    later = CFG.reset + LOST_PROBE_S
    verdict, status, probe = book.ask("svc", CFG, later)  # its run died: another probe
    assert (verdict, probe, status.probes) == (None, True, 1)
    # the lost probe reports after all: nothing goes below zero
    assert book.record("svc", CFG, later + 1, None, probe=True).probes == 0
    assert book.record("svc", CFG, later + 2, None, probe=True) == BreakerStatus(
        HALF, opened_at=later - CFG.reset)


def test_processes_asking_at_once_get_no_more_probes_than_allowed(flow, tmp_path):
    flow.put_breaker("svc", {"state": "open", "recent": [], "opened_at": 90.0, "probes": 0,
                             "passed": 0})
    probes = _together(PROBER, [flow.url], 3, tmp_path)
    assert sum(probes) == 2, probes  # half_open: 2, among 90 asks at once


def test_a_breaker_opened_by_one_run_refuses_the_next_run(flow, tmp_path):
    journal = tmp_path / "journal"
    breakers = {"svc": {"failures": 2, "reset": "1h"}}
    worker = start_worker(flow.url)
    try:
        first = DAG(circuit_breakers=breakers)
        for k in range(2):
            first.add(broken, str(journal), f"first-{k}", id=f"t{k}",
                      options={"breaker": "svc", "allow_failure": True})
        result = first.run(broker=flow.url, handle_signals=False, log_dir=None)
        assert [str(c.state) for c in result.breakers] == ["open"]
        second = DAG(circuit_breakers=breakers)
        second.add(broken, str(journal), "second", id="t", options={"breaker": "svc"})
        result = second.run(broker=flow.url, handle_signals=False, log_dir=None)
    finally:
        stop_worker(worker)
    assert isinstance(result["t"].error, CircuitOpen)  # failed at once, never sent
    assert [str(c.state) for c in result.breakers] == ["open"]  # seen open
    assert sorted(t for t, _ in starts(journal)) == ["first-0", "first-1"]
