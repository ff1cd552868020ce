"""A real worker's health moves with its recent window, once per broker (real Redis and
PostgreSQL): failing attempts make it degraded, and once they are older than its
``--health-window`` it is healthy again, while its lifetime figures keep them. Waits are hang
guards; nothing asserts how long anything took."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from tests.helpers.fleet_tasks import broken
from tests.helpers.redis import REPO, start_worker, stop_worker, worker_env
from tests.helpers.waiting import wait_for

from corral import DAG
from corral.fleet._broker import open_broker
from corral.fleet._health import Health, HealthThresholds, assess

pytestmark = pytest.mark.slow

GENEROUS_S = 120.0  # a hang guard for a loaded 2-core machine
FAILURES = 12  # over the 10 attempts health waits for before judging


@pytest.fixture
def url(any_broker_url):
    """Once per broker (real Redis and PostgreSQL)."""
    return any_broker_url


def test_a_worker_degraded_by_failures_is_healthy_again_once_they_leave_its_window(url,
                                                                                 tmp_path):
    # A window of 10 s: the failures show for a few beats (every 2.5 s), then leave it.
    proc = start_worker(url, "--concurrency", "4", "--health-window", "10s",
                        log=tmp_path / "worker.log")
    broker = open_broker(url)
    limits = HealthThresholds(heartbeat_timeout=broker.heartbeat_timeout)
    try:
        def health():
            (row,) = [w for w in broker.workers() if w.pid == proc.pid]
            return row, assess(row, time.time(), limits)

        dag = DAG()
        for i in range(FAILURES):
            dag.add(broken, str(tmp_path / "journal"), f"t{i}", id=f"t{i}")
        result = dag.run(broker=url, concurrency=FAILURES, fail_fast=False,
                         handle_signals=False, log_dir=None)
        assert not result.ok
        seen = []  # the last look: a beat may have counted only some of the failures yet

        def degraded() -> bool:
            seen[:] = [health()]
            return seen[0][1].state is Health.DEGRADED and seen[0][1].recent_done == FAILURES

        wait_for(degraded, "the worker to be degraded by all its failures", GENEROUS_S)
        row, h = seen[0]
        assert (h.recent_done, h.recent_failed, h.error_rate) == (FAILURES, FAILURES, 1.0)
        assert h.reason == f"{FAILURES} of {FAILURES} attempts failed in the last 10s " \
                           "(100% > 50%)"
        # Nothing more runs: the failures leave the window, and the worker is healthy again.
        def healthy() -> bool:
            seen[:] = [health()]
            return seen[0][1].state is Health.HEALTHY and seen[0][1].recent_done == 0

        wait_for(healthy, "every failure to leave the window", GENEROUS_S)
        row, h = seen[0]
        assert (h.recent_failed, h.error_rate) == (0, None)
        assert (row.done, row.failed) == (FAILURES, FAILURES)  # its life remembers them
        # corral workers says the same: recent failed/finished, then the lifetime counts.
        listed = subprocess.run([sys.executable, "-m", "corral", "workers", "--broker", url],
                                cwd=REPO, env=worker_env(), capture_output=True, text=True,
                                check=True)
        (line,) = [x for x in listed.stdout.splitlines() if x.startswith(row.id)]
        assert line.split()[1] == "healthy", listed.stdout
        assert f" 0/0 in 10s {FAILURES:>8} {FAILURES:>7} " in line, listed.stdout
        assert "RECENT" in listed.stdout.splitlines()[0]
    finally:
        broker.close()
        stop_worker(proc)
