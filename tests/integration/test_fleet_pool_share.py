"""Two real pool supervisors (``corral worker --min-workers 3 --max-workers 8``) on one queue of
one broker (real Redis and PostgreSQL), on one host: each counts its share of the queue, so
together they grow to what the queue needs, not twice that.

No timing: the supervisors are paused (SIGSTOP) while the load arrives and the workers take
what they can, and resumed once the registry and the queue are settled (6 workers busy, 2
attempts queued), so each measures the same state. Counting its share (1 of the 2), each pool
grows to 4; counting the whole queue it would grow to 5. Their cooldown is an hour: each
decides once."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading

import psutil
import pytest
from tests.helpers.fleet_tasks import held, starts
from tests.helpers.redis import REPO, worker_env
from tests.helpers.waiting import wait_for

from corral import DAG
from corral.fleet._broker import open_broker

pytestmark = pytest.mark.slow

GENEROUS_S = 120.0  # a hang guard for a loaded 2-core machine


@pytest.fixture
def url(any_broker_url):
    """Once per broker (real Redis and PostgreSQL)."""
    return any_broker_url


def test_two_pools_on_one_queue_grow_to_what_it_needs_not_twice_that(url, tmp_path):
    pools: list[tuple[subprocess.Popen[bytes], object]] = []
    seen: set[int] = set()
    for name in ("a", "b"):
        log = tmp_path / f"{name}.log"
        with open(log, "ab") as out:
            pools.append((subprocess.Popen(
                [sys.executable, "-m", "corral", "worker", "--broker", url, "-c", "1",
                 "--min-workers", "3", "--max-workers", "8", "--target-utilisation", "1",
                 "--scale-interval", "0.3s", "--scale-cooldown", "1h", "--grace", "0s"],
                cwd=REPO, env=worker_env(), stdout=out, stderr=out, start_new_session=True),
                log))
    broker = open_broker(url)
    release = tmp_path / "release"
    runner = None
    try:
        def workers() -> set[int]:
            for proc, _ in pools:
                with contextlib.suppress(psutil.NoSuchProcess):
                    seen.update(c.pid for c in psutil.Process(proc.pid).children())
            return seen

        wait_for(lambda: len({w.pid for w in broker.workers() if w.state == "running"}) == 6,
                 "the pools' six workers to register", GENEROUS_S)
        for proc, _ in pools:
            os.kill(proc.pid, signal.SIGSTOP)
        journal = tmp_path / "journal"
        dag = DAG()
        for i in range(8):
            dag.add(held, str(journal), f"t{i}", str(release), id=f"t{i}")
        results = []
        runner = threading.Thread(target=lambda: results.append(dag.run(
            broker=url, concurrency=8, handle_signals=False, log_dir=None)))
        runner.start()
        wait_for(lambda: len(starts(journal)) == 6 and broker.queue_depth(["default"]) == 2
                 and sum(w.running for w in broker.workers()) == 6,
                 "six workers busy, two attempts queued", GENEROUS_S)
        for proc, _ in pools:
            os.kill(proc.pid, signal.SIGCONT)
        wait_for(lambda: len(starts(journal)) == 8, "the two queued attempts to start",
                 GENEROUS_S)
        release.touch()
        runner.join(GENEROUS_S)
        assert not runner.is_alive(), "hang guard: the run did not complete"
        assert results[0].ok
        ups = []
        for _, log in pools:
            text = log.read_text()
            sizes = [int(n) for n in re.findall(r": up \d+ -> (\d+) workers", text)]
            assert max(sizes, default=3) <= 4, text  # never to 5: it counted its share only
            ups += [line for line in text.splitlines() if ": up " in line]
        assert len(workers()) <= 8
        # The first to measure saw the two queued attempts and counted one as its own.
        assert any("waiting 1 of 2 queued" in line for line in ups), ups
    finally:
        release.touch()
        broker.close()
        for proc, _ in pools:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                os.kill(proc.pid, signal.SIGTERM)
        for proc, _ in pools:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(GENEROUS_S)
        for pid in [*seen, *(p.pid for p, _ in pools)]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        for proc, _ in pools:
            proc.wait()
        if runner is not None:
            runner.join(GENEROUS_S)
