"""The fleet end to end: real Redis and PostgreSQL, real ``corral worker`` processes, real
faults.

Each test runs once per broker (tests/helpers/brokers.py), with a namespace (Redis) or a schema
(PostgreSQL) of its own. Waits are hang guards; nothing asserts how long anything took.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from pathlib import Path

import pytest
from tests.helpers.brokers import BROKERS
from tests.helpers.fleet_tasks import big, kill_my_worker, ran, starts
from tests.helpers.redis import (
    free_port,
    own_redis_server,
    start_worker,
    stop_worker,
    worker_env,
)
from tests.helpers.waiting import wait_for

from corral import DAG, TaskState
from corral._errors import TaskTimeout, WorkerCrashed
from corral.fleet._protocol import ValueTooLarge

pytestmark = pytest.mark.slow


@pytest.fixture(params=sorted(BROKERS))
def url(request):
    with BROKERS[request.param]() as u:
        yield u


def test_a_worker_killed_mid_run_costs_only_what_it_held(url, tmp_path):
    journal = tmp_path / "journal"
    log = tmp_path / "workers.log"
    args = ("--concurrency", "2", "--heartbeat-timeout", "4s")  # margin for a loaded machine
    doomed = start_worker(url, *args, log=log)
    survivor = start_worker(url, *args, log=log)
    dag = DAG(concurrency=4)
    n = 200
    for k in range(n):
        dag.add(ran, str(journal), f"t{k}", 0.02, id=f"t{k}")
    outcome: dict[str, object] = {}
    runner = threading.Thread(daemon=True, target=lambda: outcome.setdefault(
        "result", dag.run(broker=url, handle_signals=False, log_dir=None)))
    runner.start()
    try:
        wait_for(lambda: sum(p == doomed.pid for _, p in starts(journal)) >= 20,
                 "the doomed worker to run a few tasks")
        stop_worker(doomed)  # SIGKILL, mid-run
        runner.join(120)
        assert not runner.is_alive(), "hang guard: the run did not finish"
    finally:
        stop_worker(survivor)
        stop_worker(doomed)
    result = outcome["result"]
    assert result.ok, result
    seen = starts(journal)
    counts = Counter(t for t, _ in seen)
    assert set(counts) == {f"t{k}" for k in range(n)}  # every task ran
    again = {t for t, c in counts.items() if c > 1}
    # Re-executions only among what the killed worker held: first started there, at most
    # its concurrency of them.
    first = {}
    for t, p in seen:
        first.setdefault(t, p)
    assert all(first[t] == doomed.pid for t in again), (again, seen)
    assert len(again) <= 2
    assert all(c <= 2 for c in counts.values())


def test_a_worker_that_cannot_import_fails_that_attempt_and_stays_up(url, tmp_path):
    (tmp_path / "only_here.py").write_text("def f():\n    return 1\n")
    worker = start_worker(url)  # without tmp_path on its path
    try:
        import sys

        sys.path.insert(0, str(tmp_path))
        try:
            import only_here  # type: ignore[import-not-found]

            dag = DAG()
            dag.add(only_here.f, id="f")
            result = dag.run(broker=url, handle_signals=False, log_dir=None)
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop("only_here", None)
        assert result["f"].state is TaskState.FAILED
        assert isinstance(result["f"].error, ModuleNotFoundError)
        assert "only_here" in str(result["f"].error)
        assert worker.poll() is None  # still up, and still working:
        dag = DAG()
        dag.add(big, id="ok")
        assert dag.run(broker=url, handle_signals=False, log_dir=None).ok
    finally:
        stop_worker(worker)


def test_a_value_over_the_limit_fails_naming_the_limit(url):
    worker = start_worker(url, "--max-value-size", "1000")
    try:
        dag = DAG()
        dag.add(big, id="big")
        result = dag.run(broker=url, handle_signals=False, log_dir=None)
    finally:
        stop_worker(worker)
    assert isinstance(result["big"].error, ValueTooLarge)
    assert "1,000 bytes" in str(result["big"].error)


def test_a_timed_out_command_stops_on_the_worker(url, tmp_path):
    pidfile = tmp_path / "pid"
    worker = start_worker(url)
    try:
        dag = DAG()
        dag.shell("slow", f"echo $$ > {pidfile}; exec sleep 60", timeout=1)
        result = dag.run(broker=url, handle_signals=False, log_dir=None)
        assert isinstance(result["slow"].error, TaskTimeout)
        pid = int(pidfile.read_text())

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"

        wait_for(gone, "the command to be stopped on the worker")
    finally:
        stop_worker(worker)


def test_ctrl_c_hands_back_what_a_worker_holds(url, tmp_path):
    journal = tmp_path / "journal"
    log = tmp_path / "workers.log"
    # A heartbeat timeout far longer than the run: only a hand-back lets the other worker
    # take the attempt before the test's hang guard.
    first = start_worker(url, "--heartbeat-timeout", "300s", "--grace", "0", log=log)
    dag = DAG()
    dag.add(ran, str(journal), "t", 3, id="t")
    outcome: dict[str, object] = {}
    runner = threading.Thread(daemon=True, target=lambda: outcome.setdefault(
        "result", dag.run(broker=url, handle_signals=False, log_dir=None)))
    runner.start()
    second = None
    try:
        wait_for(lambda: starts(journal), "the first worker to start the task")
        first.send_signal(signal.SIGINT)
        assert first.wait(60) == 130
        second = start_worker(url, "--heartbeat-timeout", "300s", log=log)
        runner.join(60)
        assert not runner.is_alive(), "hang guard: the run did not finish"
    finally:
        stop_worker(first)
        if second is not None:
            stop_worker(second)
    assert outcome["result"].ok
    assert [p for _, p in starts(journal)] == [first.pid, second.pid]


def test_attempts_that_kill_their_workers_are_dead_lettered(url, tmp_path):
    log = tmp_path / "workers.log"
    dag = DAG()
    dag.add(kill_my_worker, id="poison")
    outcome: dict[str, object] = {}
    runner = threading.Thread(daemon=True, target=lambda: outcome.setdefault(
        "result", dag.run(broker=url, handle_signals=False, log_dir=None)))
    runner.start()
    args = ("--heartbeat-timeout", "1s", "--max-deliveries", "1")
    first = start_worker(url, *args, log=log, may_die=True)  # the poison may kill it at once
    try:
        assert first.wait(60) == -signal.SIGKILL  # the task killed it
        second = start_worker(url, *args, log=log)
        try:
            runner.join(60)
            assert not runner.is_alive(), "hang guard: the run did not finish"
        finally:
            stop_worker(second)
    finally:
        stop_worker(first)
    error = outcome["result"]["poison"].error
    assert isinstance(error, WorkerCrashed)
    assert "dead-letter" in str(error)
    from corral.fleet._broker import open_broker

    broker = open_broker(url)
    try:
        (letter,) = broker.dead_letters()
        assert letter.task_id == "poison"
    finally:
        broker.close()
    # ... and the command line shows it, queues it again, drops it.
    import json
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "corral", "dlq", *args, "--broker", url],
                              capture_output=True, text=True, timeout=60, check=False)

    listed = json.loads(cli("list", "--json").stdout)["dead_letters"]
    assert [(d["task"], d["id"]) for d in listed] == [("poison", letter.id)]
    shown = cli("show", letter.id)
    assert "handed out 2 times" in shown.stdout
    assert json.loads(cli("retry", letter.id, "--json").stdout)["retried"] == [letter.attempt]
    assert json.loads(cli("list", "--json").stdout)["dead_letters"] == []
    assert cli("show", letter.id).returncode == 2


def test_the_worker_reports_itself(url, tmp_path):
    worker = start_worker(url, "--queue", "gpu", "--queue", "default", "--concurrency", "3",
                          "--resources", "gpu=1")
    try:
        from corral.fleet._broker import open_broker

        broker = open_broker(url)
        try:
            (info,) = broker.workers()
        finally:
            broker.close()
        assert (info.pid, info.queues, info.concurrency, info.state) == \
            (worker.pid, ("gpu", "default"), 3, "running")
        assert info.resources == {"gpu": 1.0}
    finally:
        stop_worker(worker)


def test_tasks_go_to_their_queue(url, tmp_path):
    journal = tmp_path / "journal"
    plain = start_worker(url)
    gpu = start_worker(url, "--queue", "gpu", env=worker_env())
    try:
        dag = DAG()
        dag.add(ran, str(journal), "on-gpu", 0, id="on-gpu", options={"queue": "gpu"})
        dag.add(ran, str(journal), "plain", 0, id="plain")
        assert dag.run(broker=url, handle_signals=False, log_dir=None).ok
    finally:
        stop_worker(plain)
        stop_worker(gpu)
    assert dict(starts(journal)) == {"on-gpu": gpu.pid, "plain": plain.pid}


def test_a_redis_restarted_without_its_data_mid_run_still_completes(tmp_path):
    port = free_port()
    server = own_redis_server(port)
    url = f"redis://127.0.0.1:{port}/0"
    journal = tmp_path / "journal"
    worker = start_worker(url, "--concurrency", "2", "--heartbeat-timeout", "2s",
                          log=tmp_path / "worker.log")
    # Wider than the worker: attempts wait in the queue, and the restart loses them.
    dag = DAG(concurrency=8)
    n = 20
    for k in range(n):
        dag.add(ran, str(journal), f"t{k}", 0.2, id=f"t{k}")
    outcome: dict[str, object] = {}
    runner = threading.Thread(daemon=True, target=lambda: outcome.setdefault(
        "result", dag.run(broker=url, handle_signals=False, log_dir=None)))
    runner.start()
    try:
        wait_for(lambda: len(starts(journal)) >= 4, "a few tasks to run")
        server.kill()  # its data goes with it: nothing on disk
        server.wait()
        server = own_redis_server(port)
        runner.join(60)
        assert not runner.is_alive(), "hang guard: the run did not finish"
    finally:
        stop_worker(worker)
        server.kill()
        server.wait()
    result = outcome["result"]
    assert result.ok, [(t.id, t.error) for t in result.tasks.values() if t.error]
    assert {t for t, _ in starts(journal)} == {f"t{k}" for k in range(n)}


def test_a_second_coordinator_of_a_run_is_refused(url):
    from corral._errors import BrokenBroker
    from corral.fleet._coordinator import FleetSession

    first = FleetSession.connect(url, "run-1")
    first.open()
    try:
        second = FleetSession.connect(url, "run-1")
        with pytest.raises(BrokenBroker, match="already has a live coordinator"):
            second.open()
    finally:
        first.close()
    again = FleetSession.connect(url, "run-1")  # released at close: the run may go on
    again.open()
    assert again.fence > first.fence
    again.close()


def _end_connections(url: str) -> int:
    """``pg_terminate_backend`` every connection of the broker at ``url`` (its workers', its
    coordinator's: they name themselves ``corral-fleet:SCHEMA``); how many there were."""
    import psycopg
    from tests.helpers.postgres import POSTGRES_URL

    schema = url.rpartition("schema=")[2]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = %s", (f"corral-fleet:{schema}",))
        return len(rows.fetchall())


def test_postgres_connections_ended_mid_run_are_made_again_and_the_run_completes(tmp_path):
    from tests.helpers.postgres import broker_url

    journal = tmp_path / "journal"
    log = tmp_path / "workers.log"
    n = 200
    with broker_url() as url:
        args = ("--concurrency", "2", "--heartbeat-timeout", "4s")
        workers = [start_worker(url, *args, log=log) for _ in range(2)]
        dag = DAG(concurrency=4)
        for k in range(n):
            dag.add(ran, str(journal), f"t{k}", 0.02, id=f"t{k}")
        outcome: dict[str, object] = {}
        runner = threading.Thread(daemon=True, target=lambda: outcome.setdefault(
            "result", dag.run(broker=url, handle_signals=False, log_dir=None)))
        runner.start()
        try:
            for ran_so_far in (30, 100):
                wait_for(lambda k=ran_so_far: len(starts(journal)) >= k,
                         f"{ran_so_far} tasks to start")
                assert _end_connections(url) > 0
            runner.join(120)
            assert not runner.is_alive(), "hang guard: the run did not finish"
        finally:
            for w in workers:
                stop_worker(w)
    result = outcome["result"]
    assert result.ok, [(t.id, t.error) for t in result.tasks.values() if t.error]
    counts = Counter(t for t, _ in starts(journal))
    assert set(counts) == {f"t{k}" for k in range(n)}  # every task ran
    # Ended connections fail an operation, which is retried on a new one; an attempt runs
    # again only if its worker could not renew it for the heartbeat timeout.
    assert all(c <= 2 for c in counts.values()), counts
    assert "the broker failed, retrying" in log.read_text()  # the workers saw it


def test_the_session_records_each_attempts_delay_from_admission_to_start(url):
    from corral.executors.fleet import fleet_executors
    from corral.fleet._coordinator import FleetSession

    worker = start_worker(url, "--concurrency", "4")
    try:
        session = FleetSession.connect(url, "run-delays")
        session.start_delays = delays = []
        dag = DAG(concurrency=8)
        for k in range(20):  # a chain and independent tasks: STARTs alone and with their ENDs
            dag.add(abs, k, id=f"t{k}", options={"depends_on": [f"t{k - 1}"] if k % 2 else []})
        result = dag.run(executors=fleet_executors(session, ["thread"],
                                                   kinds={"thread": "callables"}),
                         handle_signals=False, log_dir=None)
    finally:
        stop_worker(worker)
    assert result.ok, result
    assert len(delays) == 20  # one per attempt: its first START, or its END
    assert all(isinstance(d, float) for d in delays)
