"""Fleet-wide flow control on the real Redis: the GCRA script agrees with the pure limiter,
processes sharing a limit get the combined rate (counted, with a fake or frozen clock),
``corral.limit`` in a task on a real ``corral worker`` takes the state its coordinator shares,
and runs share a circuit breaker (transitions by table, probes counted across processes).

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
from tests.helpers.redis import REDIS_URL, namespace_url, start_worker, stop_worker, worker_env

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
from corral.fleet.limits_redis import LOST_PROBE_S, RedisBreakers, RedisRates, worker_limits

LIMITS = {"a": RateLimit(10.0), "b": RateLimit(2.0, burst=3)}


@pytest.fixture
def prefix():
    import redis

    with namespace_url() as url:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            yield client, f"corral:{url.rpartition('namespace=')[2]}:"
        finally:
            client.close()


def test_the_script_answers_as_the_pure_limiter_does(prefix):
    client, ns = prefix
    shared = RedisRates(client, LIMITS, prefix=ns, server_time=False)
    local = LocalRates(LIMITS)
    rng = random.Random(7)
    now, due = 0.0, None
    for _ in range(400):
        names = rng.choice([["a"], ["b"], ["a", "b"]])
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


ASKER = textwrap.dedent("""
    import json, sys, time
    import redis
    from corral._limits import parse_rate_limit
    from corral.fleet.limits_redis import RedisRates

    url, prefix, limit, server_time, times = sys.argv[1:6]
    client = redis.Redis.from_url(url)
    rates = RedisRates(client, {"api": parse_rate_limit(json.loads(limit))}, prefix=prefix,
                       server_time=server_time == "1")
    client.blpop(prefix + "go", timeout=60)  # both processes start asking together
    taken = 0
    for now in json.loads(times):
        now = time.monotonic() if now is None else now
        taken += rates.try_acquire(["api"], now) is None
    print(taken)
""")


def _ask_in_two_processes(client, ns, limit, times, *, server_time):
    procs = [subprocess.Popen(
        [sys.executable, "-c", ASKER, REDIS_URL, ns, json.dumps(limit),
         "1" if server_time else "0", json.dumps(times)],
        env=worker_env(), stdout=subprocess.PIPE, text=True) for _ in range(2)]
    client.rpush(ns + "go", "go", "go")
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return [int(o) for o in outs]


def test_two_processes_on_one_fake_clock_share_the_limit(prefix):
    client, ns = prefix
    # 4/s with a burst of 4 (binary fractions: exact): at 0, four (the TAT moves to 1.0); at
    # 2.0, four more. Each process alone would take eight; together they take eight, however
    # their asks interleave.
    times = [0.0] * 50 + [2.0] * 50
    taken = _ask_in_two_processes(client, ns, {"rate": "4/s", "burst": 4}, times,
                                  server_time=False)
    assert sum(taken) == 8, taken


def test_two_processes_on_the_servers_clock_share_the_limit(prefix):
    client, ns = prefix
    # 1/h with a burst of 3: within the test nothing refills, so three in all, not six.
    taken = _ask_in_two_processes(client, ns, {"rate": "1/h", "burst": 3}, [None] * 20,
                                  server_time=True)
    assert sum(taken) == 3, taken


def test_limits_are_shared_across_runs_and_their_workers(tmp_path):
    import redis

    hourly = {"api": {"rate": "1/h", "burst": 5}}
    with namespace_url() as url:
        ns = f"corral:{url.rpartition('namespace=')[2]}:"
        worker = start_worker(url)
        try:
            first = DAG(rate_limits=hourly)
            # one taken by the coordinator's scheduler, three by tasks on the worker
            first.add(limited_calls, "api", 0, id="gated", options={"rate_limit": "api"})
            first.add(limited_calls, "api", 2, id="calls")
            first.add(limited_calls_async, "api", 1, id="acalls", options={"executor": "async"})
            first.add(limited_calls, "nope", 1, id="undeclared",
                      options={"allow_failure": True})
            result = first.run(broker=url, handle_signals=False, log_dir=None)
            assert result["gated"].state is TaskState.SUCCEEDED
            assert result["calls"].value == 2
            assert result["acalls"].value == 1
            assert "declares no rate limit 'nope'" in str(result["undeclared"].error)
            # four of a burst of five taken, an hour each:
            client = redis.Redis.from_url(REDIS_URL)
            try:
                server_now = float(client.time()[0])
                tat = float(client.get(f"{ns}rl:api"))
                assert server_now + 3 * 3600 < tat <= server_now + 4 * 3600 + 1
                # another run (another coordinator) on the same broker finds it taken
                other = RedisRates(client, {"api": parse_rate_limit(hourly["api"])},
                                   prefix=ns)
                assert other.try_acquire(["api"], 0.0) is None  # the burst's last one
                retry_at = other.try_acquire(["api"], 0.0)
                assert retry_at is not None
                assert retry_at > 1800  # about an hour on this caller's clock
            finally:
                client.close()
        finally:
            stop_worker(worker)


def test_a_worker_on_another_broker_has_no_fleet_limits():
    class NotRedis:
        url = "memory://"

    assert worker_limits(NotRedis()) is None


# --------------------------------------------------------------------------- breakers
CFG = Breaker(failures=2, window=10.0, reset=5.0, half_open=1)
OPEN, HALF, CLOSED = BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED


def test_two_runs_share_a_breakers_transitions(prefix):
    client, ns = prefix
    a = RedisBreakers(client, prefix=ns, server_time=False)  # two runs' coordinators
    b = RedisBreakers(client, prefix=ns, server_time=False)
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


def test_a_lost_probe_is_forgotten(prefix):
    client, ns = prefix
    book = RedisBreakers(client, prefix=ns, server_time=False)
    client.set(f"{ns}br:svc", json.dumps({"state": "half_open", "recent": [],
                                            "opened_at": 0.0, "probes": 1, "passed": 0}))
    assert book.ask("svc", CFG, 6.0)[0] == Hold(float("inf"))  # the probe may still run
    later = CFG.reset + LOST_PROBE_S
    verdict, status, probe = book.ask("svc", CFG, later)  # its run died: another probe
    assert (verdict, probe, status.probes) == (None, True, 1)
    # the lost probe reports after all: nothing goes below zero
    assert book.record("svc", CFG, later + 1, None, probe=True).probes == 0
    assert book.record("svc", CFG, later + 2, None, probe=True) == BreakerStatus(
        HALF, opened_at=later - CFG.reset)


PROBER = textwrap.dedent("""
    import sys
    import redis
    from corral._limits import Breaker
    from corral.fleet.limits_redis import RedisBreakers

    url, prefix = sys.argv[1:3]
    client = redis.Redis.from_url(url)
    book = RedisBreakers(client, prefix=prefix, server_time=False)
    client.blpop(prefix + "go", timeout=60)
    cfg = Breaker(failures=1, window=10.0, reset=5.0, half_open=2)
    print(sum(book.ask("svc", cfg, 100.0)[2] for _ in range(30)))
""")


def test_processes_asking_at_once_get_no_more_probes_than_allowed(prefix):
    client, ns = prefix
    client.set(f"{ns}br:svc", json.dumps({"state": "open", "recent": [], "opened_at": 90.0,
                                            "probes": 0, "passed": 0}))
    procs = [subprocess.Popen([sys.executable, "-c", PROBER, REDIS_URL, ns], env=worker_env(),
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    client.rpush(ns + "go", *["go"] * 3)
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(int(o) for o in outs) == 2, outs  # half_open: 2, among 90 asks at once


def test_a_breaker_opened_by_one_run_refuses_the_next_run(tmp_path):
    journal = tmp_path / "journal"
    breakers = {"svc": {"failures": 2, "reset": "1h"}}
    with namespace_url() as url:
        worker = start_worker(url)
        try:
            first = DAG(circuit_breakers=breakers)
            for k in range(2):
                first.add(broken, str(journal), f"first-{k}", id=f"t{k}",
                          options={"breaker": "svc", "allow_failure": True})
            result = first.run(broker=url, handle_signals=False, log_dir=None)
            assert [str(c.state) for c in result.breakers] == ["open"]
            second = DAG(circuit_breakers=breakers)
            second.add(broken, str(journal), "second", id="t", options={"breaker": "svc"})
            result = second.run(broker=url, handle_signals=False, log_dir=None)
        finally:
            stop_worker(worker)
    assert isinstance(result["t"].error, CircuitOpen)  # failed at once, never sent
    assert [str(c.state) for c in result.breakers] == ["open"]  # seen open
    assert sorted(t for t, _ in starts(journal)) == ["first-0", "first-1"]
