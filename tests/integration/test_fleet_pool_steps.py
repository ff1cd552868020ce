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


def make_pool(broker, spawn, command, clock, lines, **policy):
    options = PoolOptions(worker_args=(), queues=("default",), concurrency=2,
                          policy=ScalingPolicy(**{"cooldown_s": 0, **policy}),
                          max_restarts=3)
    return Pool(broker, options, spawn=lambda _args: spawn(command), clock=clock,
                log=lines.append)


def register(broker, pid, running):
    broker.register(WorkerInfo(id=f"w-{pid}", host=socket.gethostname(), pid=pid,
                               queues=("default",), concurrency=2, running=running,
                               started_at=time.time(), last_beat=time.time()))


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
