"""No worker outlives its pool, once per broker (real Redis and PostgreSQL): a pool supervisor
killed with SIGKILL takes its real worker processes with it, they hand back what they held,
and the run in flight completes on a worker started afterwards, nothing that succeeded
running again. And a worker whose parent is not its pool any more stops by itself (the
watchdog, for where the death signal does not reach). Waits are hang guards; nothing asserts
how long anything took."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading

import psutil
import pytest
from tests.helpers.fleet_tasks import ran, starts
from tests.helpers.redis import REPO, start_worker, stop_worker, worker_env
from tests.helpers.waiting import wait_for

from corral import DAG
from corral.fleet._broker import open_broker
from corral.fleet._worker import Worker, WorkerOptions

pytestmark = pytest.mark.slow

GENEROUS_S = 120.0  # a hang guard for a loaded 2-core machine


@pytest.fixture
def url(any_broker_url):
    """Once per broker (real Redis and PostgreSQL)."""
    return any_broker_url


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_pool_killed_with_sigkill_takes_its_workers_with_it(url, tmp_path):
    log = tmp_path / "pool.log"
    with open(log, "ab") as out:
        pool = subprocess.Popen(
            [sys.executable, "-m", "corral", "worker", "--broker", url, "--concurrency", "2",
             "--min-workers", "2", "--max-workers", "2", "--scale-interval", "0.3s",
             "--grace", "1s", "--heartbeat-timeout", "5s"],
            cwd=REPO, env=worker_env(), stdout=out, stderr=out, start_new_session=True)
    workers: set[int] = set()
    later: list[subprocess.Popen[bytes]] = []
    broker = open_broker(url)
    try:
        def children() -> set[int]:
            with contextlib.suppress(psutil.NoSuchProcess):
                workers.update(c.pid for c in psutil.Process(pool.pid).children())
            return {pid for pid in workers if alive(pid)}

        wait_for(lambda: len(children()) == 2
                 and children() <= {w.pid for w in broker.workers()},
                 "the pool's two workers to register", GENEROUS_S)
        # A run in flight: four quick tasks, then four slow ones holding every slot.
        journal = tmp_path / "journal"
        dag = DAG()
        quick = [dag.add(ran, str(journal), f"q{i}", 0.0, id=f"q{i}") for i in range(4)]
        for i in range(4):
            dag.add(ran, str(journal), f"s{i}", 3.0, id=f"s{i}",
                    options={"depends_on": [t.id for t in quick]})
        results = []
        runner = threading.Thread(target=lambda: results.append(dag.run(
            broker=url, concurrency=8, handle_signals=False, log_dir=None)))
        runner.start()
        wait_for(lambda: len([t for t, _ in starts(journal) if t.startswith("s")]) == 4,
                 "the slow tasks to start on the pool's workers", GENEROUS_S)
        ran_before = {t for t, _ in starts(journal)}
        assert {"q0", "q1", "q2", "q3"} <= ran_before
        on_pool = {pid for _, pid in starts(journal)}
        assert on_pool <= workers

        os.kill(pool.pid, signal.SIGKILL)  # the supervisor alone, as the OOM killer would
        pool.wait(GENEROUS_S)
        wait_for(lambda: not any(alive(pid) for pid in workers),
                 "every worker of the killed pool to end", GENEROUS_S)
        text = log.read_text()
        assert text.count("stopping (finishing what runs") >= 2, text  # each, gracefully
        assert "Traceback" not in text, text

        # A worker appears: the run completes, the quick tasks do not run again.
        later.append(start_worker(url, "--concurrency", "4", "--heartbeat-timeout", "5s"))
        runner.join(GENEROUS_S)
        assert not runner.is_alive(), "hang guard: the run did not complete"
        (result,) = results
        assert result.ok, text
        count = collections.Counter(t for t, _ in starts(journal))
        assert all(count[f"q{i}"] == 1 for i in range(4)), count
        assert all(count[f"s{i}"] in (1, 2) for i in range(4)), count  # in flight: maybe twice
        assert {pid for t, pid in starts(journal) if count[t] == 2} <= {later[0].pid, *workers}
    finally:
        broker.close()
        for proc in later:
            stop_worker(proc)
        for pid in [pool.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        pool.wait()


def test_a_worker_whose_pool_is_gone_stops_by_itself(url, capsys):
    """The watchdog alone: a worker told its pool is a process that is not its parent sees,
    at its first beat, that it is orphaned, and stops as on SIGTERM."""
    not_our_parent = os.getpid()  # the worker runs in this process: never its parent
    broker = open_broker(url, heartbeat_timeout=2.0)  # a beat every 0.5 s
    try:
        w = Worker(broker, WorkerOptions(concurrency=1, grace=0.0, supervisor=not_our_parent,
                                         pool="test-pool"))

        async def work() -> int:
            return await asyncio.wait_for(w.run(), GENEROUS_S)  # a hang guard

        assert asyncio.run(work()) == 0
        assert [x.id for x in broker.workers()] == []  # deregistered on its way out
    finally:
        broker.close()
    said = capsys.readouterr().err
    assert f"its pool (pid {not_our_parent}) is gone: stopping" in said


def test_a_pools_worker_started_after_its_pool_died_does_not_start(url):
    done = subprocess.run(
        [sys.executable, "-m", "corral", "worker", "--broker", url, "--pool-pid", "1",
         "--pool-id", "gone", "--pool-death-signal"],
        check=False, cwd=REPO, env=worker_env(), capture_output=True, text=True, timeout=GENEROUS_S)
    assert done.returncode == 0, done.stderr
    assert "its pool (pid 1) is gone: not starting" in done.stderr


def test_the_workers_of_a_pool_are_told_their_pool(url, tmp_path):
    """The pool's id and pid reach its workers (their command lines), and the pool's id is in
    their registry rows."""
    with open(tmp_path / "pool.log", "ab") as out:
        pool = subprocess.Popen(
            [sys.executable, "-m", "corral", "worker", "--broker", url, "--concurrency", "1",
             "--min-workers", "1", "--max-workers", "1", "--scale-interval", "0.3s"],
            cwd=REPO, env=worker_env(), stdout=out, stderr=out, start_new_session=True)
    broker = open_broker(url)
    try:
        wait_for(lambda: [w for w in broker.workers() if w.pool], "the worker to register",
                 GENEROUS_S)
        (row,) = broker.workers()
        assert row.pool is not None
        assert row.pool.startswith(f"{socket.gethostname()}-{pool.pid}-")
        cmdline = psutil.Process(row.pid).cmdline()
        assert cmdline[cmdline.index("--pool-pid") + 1] == str(pool.pid)
        assert "--pool-death-signal" in cmdline  # started from the pool's main thread
    finally:
        broker.close()
        os.kill(pool.pid, signal.SIGTERM)
        pool.wait(GENEROUS_S)

