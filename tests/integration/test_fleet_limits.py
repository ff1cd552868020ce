"""Fleet-wide rate limits on the real Redis: the GCRA script agrees with the pure limiter,
processes sharing a limit get the combined rate (counted, with a fake or frozen clock), and
``corral.limit`` in a task on a real ``corral worker`` takes the state its coordinator shares.

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
from tests.helpers.fleet_tasks import limited_calls
from tests.helpers.redis import REDIS_URL, namespace_url, start_worker, stop_worker, worker_env

from corral import DAG, TaskState
from corral._limits import LocalRates, RateLimit, parse_rate_limit
from corral.fleet.limits_redis import RedisRates, worker_limits

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

    hourly = {"api": {"rate": "1/h", "burst": 4}}
    with namespace_url() as url:
        ns = f"corral:{url.rpartition('namespace=')[2]}:"
        worker = start_worker(url)
        try:
            first = DAG(rate_limits=hourly)
            # one taken by the coordinator's scheduler, two by a task on the worker
            first.add(limited_calls, "api", 0, id="gated", options={"rate_limit": "api"})
            first.add(limited_calls, "api", 2, id="calls")
            first.add(limited_calls, "nope", 1, id="undeclared",
                      options={"allow_failure": True})
            result = first.run(broker=url, handle_signals=False, log_dir=None)
            assert result["gated"].state is TaskState.SUCCEEDED
            assert result["calls"].value == 2
            assert "declares no rate limit 'nope'" in str(result["undeclared"].error)
            # three of a burst of four taken, an hour each:
            client = redis.Redis.from_url(REDIS_URL)
            try:
                server_now = float(client.time()[0])
                tat = float(client.get(f"{ns}rl:api"))
                assert server_now + 2 * 3600 < tat <= server_now + 3 * 3600 + 1
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
