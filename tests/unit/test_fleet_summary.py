"""The fleet's pools from one sample (pure): counts by health, capacity, throughput; and the
server's kept samples for throughput (at least 1 s apart)."""

from __future__ import annotations

import pytest

pytest.importorskip("prometheus_client")

from corral.fleet._broker import WorkerInfo  # noqa: E402
from corral.fleet._summary import FleetSample, pools_of  # noqa: E402
from corral.server._orchestration import _Kept  # noqa: E402

NOW = 1_000_000.0


def worker(id: str, queues: tuple[str, ...], *, c: int = 2, done: int = 0, running: int = 0,
           age: float = 100.0, silent: float = 0.0, state: str = "running") -> WorkerInfo:
    return WorkerInfo(id=id, host="h", pid=1, queues=queues, concurrency=c, running=running,
                      done=done, started_at=NOW - age, last_beat=NOW - silent, state=state)


def sample(*workers: WorkerInfo, at: float = NOW, **depths: int) -> FleetSample:
    return FleetSample(at=at, workers=workers, depths=depths, saturation=0.1)


def test_one_pool_per_queue_served_a_worker_in_each_of_its_queues():
    s = sample(worker("a", ("default",), c=2, done=10, running=1),
               worker("b", ("default", "gpu"), c=3, done=20, running=3),
               worker("c", ("gpu",), c=4, silent=60.0),  # missed its beats
               default=7)
    pools = {p["queue"]: p for p in pools_of(s, None)}
    assert pools["default"] == {
        "queue": "default", "workers": 2, "starting": 0, "healthy": 2, "degraded": 0,
        "unhealthy": 0, "stopping": 0, "capacity": 5, "running": 4, "queued": 7, "done": 30,
        # no windows reported (older workers): their lifetime figures
        "recent_done": 30, "recent_failed": 0, "error_rate": 0.0,
        "throughput_per_s": 0.3, "throughput_over_s": None}  # 10/100 + 20/100
    gpu = pools["gpu"]
    assert (gpu["workers"], gpu["healthy"], gpu["unhealthy"]) == (2, 1, 1)
    assert gpu["capacity"] == 3  # the unhealthy worker's slots do not count
    assert gpu["queued"] == 0


def test_throughput_since_a_base_counts_new_workers_by_their_rate():
    base = sample(worker("a", ("q",), done=10), at=NOW - 10)
    now = sample(worker("a", ("q",), done=30),  # 20 more
                 worker("b", ("q",), done=4, age=5.0))  # new: all 4 within the interval
    (pool,) = pools_of(now, base)
    assert pool["throughput_per_s"] == 2.4  # (20 + 4) / 10 s
    assert pool["throughput_over_s"] == 10.0


def test_kept_samples_are_at_least_a_second_apart():
    kept = _Kept()
    first = sample(at=NOW)
    assert kept.base_for(first) is None  # kept
    assert kept.base_for(sample(at=NOW + 0.5)) is None  # too close: not kept, no base
    second = sample(at=NOW + 1.2)
    assert kept.base_for(second) is first  # kept
    assert kept.base_for(sample(at=NOW + 1.5)) is first  # the newest >= 1 s older
    assert kept.base_for(sample(at=NOW + 2.5)) is second


def test_a_pools_error_rate_is_over_its_workers_recent_windows():
    from dataclasses import replace

    a = replace(worker("a", ("q",), done=100), failed=90, window_s=300, recent_done=10,
                recent_failed=1)
    b = replace(worker("b", ("q",), done=5), window_s=300)  # nothing lately
    (pool,) = pools_of(sample(a, b), None)
    assert (pool["recent_done"], pool["recent_failed"], pool["error_rate"]) == (10, 1, 0.1)
    (idle,) = pools_of(sample(b), None)
    assert idle["error_rate"] is None
