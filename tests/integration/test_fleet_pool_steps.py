"""The pool supervisor step by step, once per broker (real Redis and PostgreSQL): ``sleep``
processes stand in for workers (registered by hand, so the load is exactly what a test says),
and a clock moves only when told. No waiting on time."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from tests.helpers.brokers import BROKERS

from corral._errors import BrokenExecutor
from corral.fleet._autoscale import Direction, ScalingPolicy
from corral.fleet._broker import WorkerInfo, open_broker
from corral.fleet._pool import Pool, PoolOptions


@pytest.fixture(params=sorted(BROKERS))
def broker(request):
    with BROKERS[request.param]() as url:
        b = open_broker(url)
        try:
            yield b
        finally:
            b.close()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def procs():
    started: list[subprocess.Popen[bytes]] = []

    def spawn(command: list[str]) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(command)
        started.append(p)
        return p

    yield spawn
    for p in started:
        p.kill()
        p.wait()


def make_pool(broker, spawn, command, clock, lines, observer=None, **policy):
    options = PoolOptions(worker_args=(), queues=("default",), concurrency=2,
                          policy=ScalingPolicy(**{"cooldown_s": 0, **policy}),
                          max_restarts=3)
    return Pool(broker, options, spawn=lambda _args, _env: spawn(command), clock=clock,
                log=lines.append, observer=observer)


def register(broker, pid, running, *, started=0.0, silent=0.0, done=0):
    """Register a worker row for ``pid``, started ``started`` s ago (0: now) and silent for
    ``silent`` s."""
    now = time.time()
    broker.register(WorkerInfo(id=f"w-{pid}-{started}", host=socket.gethostname(), pid=pid,
                               queues=("default",), concurrency=2, running=running,
                               done=done, started_at=now - started, last_beat=now - silent))


def test_it_stops_the_idlest_worker_and_keeps_the_busy_one(broker, procs):
    lines: list[str] = []
    pool = make_pool(broker, procs, ["sleep", "60"], Clock(), lines, min_workers=1,
                     max_workers=3)
    pool._start(3)
    busy, *idle = sorted(pool.live)
    register(broker, busy, 2)
    for pid in idle:
        register(broker, pid, 0)
    d = pool.step()  # 2 running on 6 slots: 0.33 < 0.35 -> needs 2 (at 0.7), surplus 1
    assert (d.direction, d.current, d.workers) == (Direction.DOWN, 3, 2), d.reason
    assert busy in pool.live
    assert len(pool.stopping) == 1
    (stopped,) = pool.stopping
    assert stopped in idle
    pool.stopping[stopped][0].wait()  # sleep ends on SIGTERM
    pool.step()
    assert not pool.stopping
    assert any(line.startswith("corral pool: down 3 -> 2 workers: under 0.35") for line in lines)


def test_a_worker_that_dies_is_replaced_and_one_that_keeps_dying_stops_the_pool(broker,
                                                                               procs):
    lines: list[str] = []
    pool = make_pool(broker, procs, ["false"], Clock(), lines, min_workers=1, max_workers=1)
    pool._start(1)
    for _ in range(3):  # three deaths: each replaced
        for p in pool.live.values():
            p.wait()
        pool.step()
    assert sum("exited unasked (exit code 1); starting another" in x for x in lines) == 3
    for p in pool.live.values():
        p.wait()
    with pytest.raises(BrokenExecutor, match="4 pool workers died within 60s"):
        pool.step()


def test_deaths_spread_out_in_time_do_not_stop_the_pool(broker, procs):
    clock, lines = Clock(), []
    pool = make_pool(broker, procs, ["false"], clock, lines, min_workers=1, max_workers=1)
    pool._start(1)
    for _ in range(6):
        for p in pool.live.values():
            p.wait()
        clock.now += 30  # two deaths a minute: under the limit of 3
        pool.step()
    assert sum("exited unasked" in x for x in lines) == 6


def test_a_silent_worker_is_killed_and_replaced_but_an_old_row_of_its_pid_is_not_its(broker,
                                                                                      procs):
    lines: list[str] = []
    pool = make_pool(broker, procs, ["sleep", "60"], Clock(), lines, min_workers=2,
                     max_workers=2)
    pool._start(2)
    frozen, fine = sorted(pool.live)
    register(broker, frozen, 1, silent=100)  # beat 100 s ago: unhealthy
    register(broker, fine, 0, started=500, silent=400)  # an earlier process with this pid
    register(broker, fine, 0)
    pool.step()
    assert any(f"worker pid {frozen} is unhealthy (no heartbeat for" in x for x in lines), lines
    assert not any(f"worker pid {fine} is unhealthy" in x for x in lines), lines
    pool.live[frozen].wait()  # SIGKILLed
    pool.step()
    assert f"corral pool: worker pid {frozen} exited unasked (exit code -9); starting another" \
        in lines
    assert frozen not in pool.live
    assert fine in pool.live
    assert len(pool.live) == 2


def test_the_pool_exports_its_size_load_decisions_and_health(broker, procs):
    from prometheus_client import generate_latest

    from corral.fleet._pool_metrics import METRIC_NAMES, PoolMetrics

    metrics = PoolMetrics()
    metrics.bounds(1, 3, 0.7)
    lines: list[str] = []
    pool = make_pool(broker, procs, ["sleep", "60"], Clock(), lines, observer=metrics,
                     min_workers=1, max_workers=3)
    pool._start(3)
    for k, pid in enumerate(sorted(pool.live)):
        register(broker, pid, 0, done=0 if k else 20)
    pool.step()  # no load: 3 -> 2
    text = generate_latest(metrics.registry).decode()
    for name in METRIC_NAMES:
        assert f"\n{name}" in text, name
    assert "corral_pool_workers 2.0" in text
    assert 'corral_pool_workers_limit{bound="max"} 3.0' in text
    assert 'corral_pool_scaling_decisions_total{direction="down"} 1.0' in text
    assert 'corral_pool_scaling_decisions_total{direction="up"} 0.0' in text
    assert 'corral_pool_workers_by_health{health="starting"} 2.0' in text
    assert 'corral_pool_workers_by_health{health="healthy"} 1.0' in text
    assert "corral_pool_utilisation_ratio 0.0" in text


def test_two_pools_on_one_queue_each_count_their_share_of_it(broker, procs):
    """Two supervisors over one broker, their workers busy (2 of 2 slots each), 4 attempts
    queued: each pool counts half of the queue (by their capacities, from the registry) and
    grows to 3, 6 workers for 12 attempts; each counting all of it, both would grow to 4. A
    pool alone on the queue counts all of it."""
    from corral.fleet._protocol import AttemptMessage

    one, two = [], []
    a = make_pool(broker, procs, ["sleep", "60"], Clock(), one, min_workers=1, max_workers=8,
                  target=1.0)
    b = make_pool(broker, procs, ["sleep", "60"], Clock(), two, min_workers=1, max_workers=8,
                  target=1.0)
    a._start(2)
    b._start(2)
    for pid in [*a.live, *b.live]:
        register(broker, pid, 2)
    broker.enqueue([AttemptMessage(id=f"s:{k}:1", run_id="run", task_id=f"t{k}",
                                   queue="default", executor="thread", reply="run:s",
                                   body=b"-") for k in range(4)])
    da, db = a.step(), b.step()
    assert (da.direction, da.current, da.workers) == (Direction.UP, 2, 3), da.reason
    assert (db.direction, db.current, db.workers) == (Direction.UP, 2, 3), db.reason
    assert "running 4 + waiting 2 of 4 queued on 2 * 2 slots" in da.reason
    # B's workers are gone from the registry: A is alone on the queue, and counts all of it.
    for w in broker.workers():
        if w.pid in b.live:
            broker.deregister(w.id)
    d = a.step()
    assert "running 4 + waiting 4 on 3 * 2 slots" in d.reason, d.reason
