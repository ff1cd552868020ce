"""The fleet's command line: ``run --broker``, ``worker``, ``workers``, ``dlq``, as a user
types them (real Redis and PostgreSQL, each test once per broker; real worker processes).
Waits are hang guards."""

from __future__ import annotations

import json

import pytest
from tests.helpers.brokers import BROKERS
from tests.helpers.redis import start_worker, stop_worker, worker_env

pytestmark = pytest.mark.slow

PIPELINE = """
name: fleet-demo
env:
  WHERE: the fleet
tasks:
  double:
    call: "fleetmods:double"
    args: [21]
  shout:
    cmd: echo "hello from $WHERE"
  silent:
    cmd: "true"
  after:
    call: "fleetmods:double"
    args: [1]
    depends_on: [double, shout]
"""

MODULE = """
def double(x):
    print("doubling", x)
    return 2 * x
"""


@pytest.fixture(params=sorted(BROKERS))
def url(request):
    with BROKERS[request.param]() as u:
        yield u


def test_a_pipeline_runs_on_a_worker_and_its_logs_come_back(corral, write, url, tmp_path):
    write("pipeline.yml", PIPELINE)
    write("fleetmods.py", MODULE)
    worker = start_worker(url, env=worker_env(tmp_path))
    try:
        done = corral("run", "pipeline.yml", "--broker", url, "--json")
    finally:
        stop_worker(worker)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {t: v["state"] for t, v in report["tasks"].items()} == \
        dict.fromkeys(("double", "shout", "silent", "after"), "succeeded")
    shown = corral("logs", report["run_id"], "shout")
    assert "hello from the fleet" in shown.stdout  # the pipeline's env, on the worker
    assert corral("logs", report["run_id"], "silent").returncode == 0  # empty, but there
    shown = corral("logs", report["run_id"], "double")
    assert "doubling 21" in shown.stdout


@pytest.mark.parametrize("broker", ["redis://127.0.0.1:1/0", "redis://127.0.0.1:6379/x",
                                    "postgresql://corral:secret@127.0.0.1:1/test",
                                    "postgresql://127.0.0.1:5432/test?schema=Bad-Name",
                                    "nonsense"])
def test_a_broker_that_cannot_be_used_exits_3_and_starts_nothing(corral, write, broker,
                                                                   tmp_path):
    write("pipeline.yml", PIPELINE)
    write("fleetmods.py", MODULE)
    done = corral("run", "pipeline.yml", "--broker", broker)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "broker" in done.stderr.lower() or "redis" in done.stderr.lower()
    assert "secret" not in done.stderr  # the URL is named, its password hidden
    if "secret" in broker:
        assert "postgresql://corral:***@127.0.0.1:1/test" in done.stderr
    assert corral("runs", "--json").stdout.count("run_id") == 0  # nothing was recorded
    worker = corral("worker", "--broker", broker)
    assert worker.returncode == 3, worker.stderr
    assert "Traceback" not in worker.stderr


@pytest.mark.parametrize(("args", "says"), [
    (("--queue", "no spaces"), "not a queue name"),
    (("--resources", "gpu"), "NAME=AMOUNT"),
    (("--resources", "gpu=lots"), "not a number"),
    (("--resources", "gpu=-1"), ">= 0"),
])
def test_a_worker_with_bad_options_exits_2_saying_why(corral, args, says):
    done = corral("worker", "--broker", "redis://127.0.0.1:6379/0", *args)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_workers_and_an_empty_dlq(corral, url):
    worker = start_worker(url, "--queue", "gpu", "--concurrency", "3")
    try:
        listed = corral("workers", "--broker", url, "--json")
        text = corral("workers", "--broker", url)
    finally:
        stop_worker(worker)
    assert listed.returncode == 0, listed.stderr
    (w,) = json.loads(listed.stdout)["workers"]
    assert (w["pid"], w["queues"], w["concurrency"], w["state"]) == \
        (worker.pid, ["gpu"], 3, "running")
    assert w["id"] in text.stdout
    assert json.loads(corral("dlq", "list", "--broker", url, "--json").stdout) == \
        {"dead_letters": []}
    assert corral("dlq", "show", "1-0", "--broker", url).returncode == 2
    assert corral("dlq", "purge", "--broker", url).returncode == 2  # name some, or all
    assert json.loads(corral("dlq", "purge", "all", "--broker", url, "--json").stdout) == \
        {"purged": 0}


def test_a_killed_coordinator_is_resumed_with_the_same_workers(corral, corral_popen, write,
                                                               url, tmp_path):
    import signal
    import time

    from tests.helpers.waiting import wait_for

    n = 12
    journal = tmp_path / "journal"  # absolute: a command runs in the worker's directory
    write("chain.yml", "name: chain\ntasks:\n" + "".join(
        f"  t{k}:\n    cmd: echo t{k} >> {journal}; sleep 0.3\n"
        + (f"    depends_on: [t{k - 1}]\n" if k else "") for k in range(n)))
    worker = start_worker(url, "--heartbeat-timeout", "2s")
    try:
        run = corral_popen("run", "chain.yml", "--broker", url, "--store",
                           f"sqlite:///{tmp_path / 'runs.db'}")
        wait_for(lambda: journal.exists() and len(journal.read_text().split()) >= 4,
                 "a few tasks to run")
        run.send_signal(signal.SIGKILL)
        run.wait()
        ran_before = journal.read_text().split()
        time.sleep(0.5)  # the worker finishes what it held (its outcome goes nowhere)
        resumed = corral("run", "chain.yml", "--resume", "--broker", url, "--store",
                         f"sqlite:///{tmp_path / 'runs.db'}")
    finally:
        stop_worker(worker)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    ran = journal.read_text().split()
    assert sorted(set(ran)) == sorted(f"t{k}" for k in range(n))  # all ran
    # What the store had as succeeded before the kill did not run again: at most the one in
    # flight when the coordinator died runs twice.
    assert len(ran) - n <= 1, (ran_before, ran)


def test_the_postgres_brokers_connections_count_against_the_stores_server(corral, write):
    import psycopg
    from tests.helpers.postgres import POSTGRES_URL, schema_url

    from corral.fleet.postgres import PROCESS_CONNECTIONS

    with psycopg.connect(POSTGRES_URL) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('max_connections', "
            "'superuser_reserved_connections', 'reserved_connections')").fetchall())
    usable = int(settings["max_connections"]) - sum(
        int(settings.get(k, "0")) for k in ("superuser_reserved_connections",
                                            "reserved_connections"))
    write("pipeline.yml", PIPELINE)
    write("fleetmods.py", MODULE)
    with schema_url() as store:
        # The store alone fits; with the broker's connections on the same server it does not.
        done = corral("run", "pipeline.yml", "--store", store, "--store-connections",
                      str(usable - PROCESS_CONNECTIONS + 1), "--broker", POSTGRES_URL)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{PROCESS_CONNECTIONS} for the PostgreSQL broker" in done.stderr
    assert "CORRAL_BROKER" in done.stderr
