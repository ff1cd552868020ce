"""A pool (``corral worker --min-workers 1 --max-workers 3``) under a real load, once per
broker (real Redis and PostgreSQL), with a real supervisor and real worker processes. It grows
while slow tasks queue, and shrinks back to its minimum once they are done. Waits are hang
guards; nothing asserts how long anything took."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import psutil
import pytest
from tests.helpers.brokers import BROKERS
from tests.helpers.fleet_tasks import ran, starts
from tests.helpers.redis import REPO, worker_env
from tests.helpers.waiting import wait_for

from corral import DAG

pytestmark = pytest.mark.slow

GENEROUS_S = 120.0  # a hang guard for a loaded 2-core machine


@pytest.fixture(params=sorted(BROKERS))
def url(request):
    with BROKERS[request.param]() as u:
        yield u


def pool_workers(pool: subprocess.Popen[bytes]) -> list[int]:
    """The pids of the pool's worker processes now (its children; their own children, such
    as a process executor's, are not counted)."""
    try:
        return [c.pid for c in psutil.Process(pool.pid).children()
                if c.status() != psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


@pytest.fixture
def start_pool(url, tmp_path):
    """Start ``corral worker --broker URL ARGS`` (a pool); returns (process, its log). At the
    end: SIGTERM (its workers stop with it), then, as a hang guard, SIGKILL what is left."""
    started: list[subprocess.Popen[bytes]] = []
    seen: set[int] = set()
    log = tmp_path / "pool.log"

    def start(*args: str, **env: str) -> tuple[subprocess.Popen[bytes], object]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "corral", "worker", "--broker", url, *args],
                cwd=REPO, env=worker_env(**env), stdout=out, stderr=out,
                start_new_session=True)
        started.append(proc)
        return proc, log

    def watch(proc: subprocess.Popen[bytes]) -> list[int]:
        pids = pool_workers(proc)
        seen.update(pids)
        return pids

    start.watch = watch
    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(GENEROUS_S)
    for pid in seen:  # workers live in sessions of their own
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics(port: int) -> str:
    """The pool's /metrics text ("" while it does not answer yet)."""
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""


@pytest.fixture
def registered(url):
    """pid -> state of the workers in the broker's registry (one broker for the test: polling
    must not open a connection pool per look)."""
    from corral.fleet._broker import open_broker

    broker = open_broker(url)

    def look() -> dict[int, str]:
        return {w.pid: w.state for w in broker.workers()}

    yield look
    broker.close()


def test_a_pool_grows_under_load_and_shrinks_back_to_its_minimum(url, start_pool, registered):
    port = free_port()
    pool, log = start_pool("--concurrency", "1", "--min-workers", "1", "--max-workers", "3",
                           "--scale-interval", "0.3s", "--scale-cooldown", "1s",
                           "--heartbeat-timeout", "5s", "--grace", "5s",
                           "--metrics-port", str(port))
    workers = start_pool.watch
    wait_for(lambda: len(workers(pool)) == 1 and set(workers(pool)) <= set(registered()),
             "the pool's first worker to register", GENEROUS_S)
    journal = log.parent / "journal"
    dag = DAG()
    for i in range(12):
        dag.add(ran, str(journal), f"t{i}", 1.0, id=f"t{i}")
    result = dag.run(broker=url, concurrency=12, handle_signals=False, log_dir=None)
    assert result.ok, log.read_text()
    ran_on = {pid for _, pid in starts(journal)}
    assert 1 < len(ran_on) <= 3, log.read_text()  # it grew: more than one worker took tasks
    ups = [line for line in log.read_text().splitlines() if ": up " in line]
    assert ups, log.read_text()
    assert "utilisation" in ups[0]
    # The load is gone: back to one worker, the others stopped gracefully.
    wait_for(lambda: len(workers(pool)) == 1, "the pool to shrink to 1", GENEROUS_S)
    text = log.read_text()
    assert ": down " in text, text
    assert "exited unasked" not in text, text
    (last,) = workers(pool)
    wait_for(lambda: [p for p, s in registered().items() if s == "running"] == [last],
             "the stopped workers to leave the registry", GENEROUS_S)
    # Its metrics say the same.
    wait_for(lambda: "\ncorral_pool_workers 1.0" in metrics(port), "the metrics to show 1 worker",
             GENEROUS_S)
    shown = metrics(port)
    ups, downs = (float(shown.split(f'direction="{d}"}} ')[1].split()[0]) for d in ("up", "down"))
    assert ups >= 1
    assert downs >= 1
    # SIGTERM: the pool stops its workers and exits as a worker does.
    os.kill(pool.pid, signal.SIGTERM)
    assert pool.wait(GENEROUS_S) == 128 + signal.SIGTERM, log.read_text()
    assert not psutil.pid_exists(last) or psutil.Process(last).status() == psutil.STATUS_ZOMBIE


def test_a_worker_of_the_pool_that_dies_is_replaced(url, start_pool, registered):
    pool, log = start_pool("--concurrency", "1", "--min-workers", "2", "--max-workers", "2",
                           "--scale-interval", "0.3s")
    workers = start_pool.watch
    wait_for(lambda: len(workers(pool)) == 2 and set(workers(pool)) <= set(registered()),
             "two workers, registered", GENEROUS_S)
    victim = workers(pool)[0]
    os.kill(victim, signal.SIGKILL)
    said = f"worker pid {victim} exited unasked (exit code -9)"
    wait_for(lambda: said in log.read_text(), "the pool to say the worker died", GENEROUS_S)
    wait_for(lambda: len(workers(pool)) == 2 and victim not in workers(pool),
             "a worker in the killed one's place", GENEROUS_S)
    # corral workers --json: each worker with its health.
    wait_for(lambda: set(workers(pool)) <= set(registered()), "the new worker to register",
             GENEROUS_S)
    listed = subprocess.run([sys.executable, "-m", "corral", "workers", "--broker", url,
                             "--json"], cwd=REPO, env=worker_env(), capture_output=True,
                            text=True, check=True)
    report = json.loads(listed.stdout)
    health = {w["pid"]: w["health"] for w in report["workers"]}
    assert sum(report["by_health"].values()) == len(report["workers"])
    for pid in workers(pool):
        assert health[pid]["state"] in ("starting", "healthy"), health
        assert health[pid]["failed"] == 0
    assert victim in health  # listed until it is silent past the heartbeat timeout


def test_a_pool_from_the_environment_starts_plain_workers(url, start_pool, registered):
    pool, log = start_pool("--concurrency", "1", "--scale-interval", "0.3s",
                           CORRAL_MIN_WORKERS="2", CORRAL_MAX_WORKERS="2")
    workers = start_pool.watch
    wait_for(lambda: len(registered()) >= 2, "two workers to register", GENEROUS_S)
    # Its workers did not read CORRAL_MIN_WORKERS: each is a worker, not a pool of its own.
    assert set(registered()) == set(workers(pool)), log.read_text()
