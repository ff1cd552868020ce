"""Balanced queues end to end: real brokers, real ``corral worker`` processes. The coordinator
sends each attempt of a balanced queue to the worker the queue's strategy chooses; the
journal of :func:`ran` says which worker process ran what.

Each test runs once per broker. Waits are hang guards; nothing asserts how long anything took.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from tests.helpers.brokers import BROKERS
from tests.helpers.fleet_tasks import ran, starts
from tests.helpers.redis import REPO, start_worker, stop_worker

from corral import DAG

pytestmark = pytest.mark.slow


@pytest.fixture(params=sorted(BROKERS))
def url(request):
    with BROKERS[request.param]() as u:
        yield u


def run_balanced(url, tmp_path, strategy, workers, n):
    journal = tmp_path / "journal"
    procs = [start_worker(url, *args) for args in workers]
    try:
        dag = DAG(concurrency=4, queues={"default": {"strategy": strategy}})
        for k in range(n):
            dag.add(ran, str(journal), f"t{k}", 0.05, id=f"t{k}")
        result = dag.run(broker=url, handle_signals=False, log_dir=None)
    finally:
        for proc in procs:
            stop_worker(proc)
    assert result.ok, result
    seen = starts(journal)
    assert sorted(t for t, _ in seen) == sorted(f"t{k}" for k in range(n))  # each ran once
    counts = Counter(p for _, p in seen)
    return [counts[proc.pid] for proc in procs]


def test_round_robin_sends_each_worker_its_turn(url, tmp_path):
    counts = run_balanced(url, tmp_path, "round_robin",
                          [("--concurrency", "1"), ("--concurrency", "3")], 8)
    assert counts == [4, 4]  # whatever their concurrency


def test_weighted_follows_the_workers_weights(url, tmp_path):
    counts = run_balanced(url, tmp_path, "weighted",
                          [("--concurrency", "2", "--weight", "3"),
                           ("--concurrency", "2", "--weight", "1")], 8)
    assert counts == [6, 2]


def test_least_loaded_gives_the_larger_worker_more(url, tmp_path):
    counts = run_balanced(url, tmp_path, "least_loaded",
                          [("--concurrency", "1"), ("--concurrency", "3")], 12)
    assert counts[1] > counts[0]


def test_corral_run_balance_and_the_files_queues(url, tmp_path):
    journal = tmp_path / "journal"
    tasks = "\n".join(f"  t{k}: {{call: 'tests.helpers.fleet_tasks:ran', "
                      f"args: ['{journal}', t{k}, 0.01]}}" for k in range(4))
    pipeline = tmp_path / "p.yml"
    pipeline.write_text(f"queues:\n  default: {{strategy: least_loaded}}\ntasks:\n{tasks}\n")
    procs = [start_worker(url, "--concurrency", "2") for _ in range(2)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        for extra in ((), ("--balance", "default=round_robin")):
            done = subprocess.run(
                [sys.executable, "-m", "corral", "run", str(pipeline), "--broker", url,
                 "--no-store", *extra], check=False, cwd=tmp_path, env=env,
                capture_output=True,
                text=True, timeout=120)
            assert done.returncode == 0, done.stderr
        bad = subprocess.run(
            [sys.executable, "-m", "corral", "run", str(pipeline), "--broker", url,
             "--no-store", "--balance", "default=least_load"], check=False, cwd=tmp_path,
            env=env, capture_output=True, text=True, timeout=120)
    finally:
        for proc in procs:
            stop_worker(proc)
    assert len(starts(journal)) == 8
    assert bad.returncode == 2
    assert "did you mean 'least_loaded'?" in bad.stderr


def test_with_no_live_worker_attempts_wait_in_the_shared_queue(url, tmp_path):
    # The run starts before any worker: its first attempts go to the shared queue (no
    # candidate), and the worker that comes later takes them, then those sent to it.
    journal = tmp_path / "journal"
    dag = DAG(concurrency=2, queues={"default": {"strategy": "least_loaded"}})
    for k in range(6):
        dag.add(ran, str(journal), f"t{k}", 0.05, id=f"t{k}")
    outcome: dict[str, object] = {}
    runner = threading.Thread(daemon=True, target=lambda: outcome.setdefault(
        "result", dag.run(broker=url, handle_signals=False, log_dir=None)))
    runner.start()
    time.sleep(1)  # the coordinator has read an empty registry (not an assertion)
    proc = start_worker(url, "--concurrency", "2")
    try:
        runner.join(120)
        assert not runner.is_alive(), "hang guard: the run did not finish"
    finally:
        stop_worker(proc)
    assert outcome["result"].ok
    assert Counter(p for _, p in starts(journal)) == {proc.pid: 6}
