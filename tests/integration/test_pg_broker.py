"""What only the PostgreSQL broker has: its schema (made by the store's migrations, by any
number of processes at once), its LISTEN/NOTIFY wake-ups. The protocol itself is the broker
conformance suite's (tests/conformance/broker/). Real PostgreSQL; waits are hang guards."""

from __future__ import annotations

import threading

import psycopg
import pytest
from tests.helpers.postgres import POSTGRES_URL, broker_url
from tests.helpers.waiting import wait_for

from corral._errors import BrokenBroker
from corral.fleet._broker import open_broker
from corral.fleet._protocol import START, AttemptMessage, Event


@pytest.fixture
def url():
    with broker_url() as u:
        yield u


def _schema(url: str) -> str:
    return url.rpartition("schema=")[2]


def test_brokers_opened_at_once_make_the_schema_once(url):
    opened, failed = [], []

    def connect() -> None:
        try:
            opened.append(open_broker(url))
        except Exception as exc:
            failed.append(exc)

    threads = [threading.Thread(target=connect) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for broker in opened:
        broker.close()
    assert not failed, failed
    with psycopg.connect(POSTGRES_URL) as conn:
        versions = conn.execute(f"SELECT version FROM {_schema(url)}.schema_version").fetchall()
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (_schema(url),))}
    assert versions == [(1,), (2,), (3,), (4,), (5,), (6,)]
    assert {"jobs", "events", "marks", "dead_letters", "workers", "leases", "meta",
            "rate_limits", "rate_declarations", "breakers"} <= tables


def _drop_flow_control(conn, schema):
    """Undo version 5: the flow control's tables."""
    conn.execute(f"DROP TABLE {schema}.rate_limits, {schema}.rate_declarations, "
                 f"{schema}.breakers")


def _drop_worker_window(conn, schema):
    """Undo version 6: the workers' recent window and pool."""
    conn.execute(f"ALTER TABLE {schema}.workers DROP COLUMN window_s, DROP COLUMN recent_done, "
                 "DROP COLUMN recent_failed, DROP COLUMN recent_busy_s, DROP COLUMN pool")


def test_a_version_2_schema_with_workers_upgrades_and_keeps_them(url):
    import time

    from corral.fleet._broker import WorkerInfo

    broker = open_broker(url)
    now = time.time()
    broker.register(WorkerInfo(id="w1", host="h", pid=1, queues=("default",), concurrency=2,
                               done=4, started_at=now, last_beat=now))
    broker.close()
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:  # back to version 2
        _drop_worker_window(conn, _schema(url))
        conn.execute(f"ALTER TABLE {_schema(url)}.workers DROP COLUMN failed, "
                     "DROP COLUMN busy_s, DROP COLUMN weight")
        conn.execute(f"ALTER TABLE {_schema(url)}.jobs DROP COLUMN target")
        _drop_flow_control(conn, _schema(url))
        conn.execute(f"DELETE FROM {_schema(url)}.schema_version WHERE version >= 3")
    broker = open_broker(url)
    try:
        (w,) = broker.workers()
    finally:
        broker.close()
    assert (w.id, w.done, w.failed, w.busy_s) == ("w1", 4, 0, 0.0)


def test_a_schema_written_by_a_newer_corral_is_refused(url):
    open_broker(url).close()
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {_schema(url)}.schema_version VALUES (99, now())")
    with pytest.raises(BrokenBroker, match="version 99"):
        open_broker(url)


def test_a_version_1_schema_is_upgraded_keeping_its_events(url):
    # Version 1 is version 6 without the events' start column (2), the workers' health
    # figures (3), the jobs' targets and the workers' weights (4), the flow control's
    # tables (5) and the workers' windows and pools (6): made so from a fresh schema.
    open_broker(url).close()
    schema = _schema(url)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        _drop_worker_window(conn, schema)
        conn.execute(f"ALTER TABLE {schema}.events DROP COLUMN started")
        conn.execute(f"ALTER TABLE {schema}.workers DROP COLUMN failed, DROP COLUMN busy_s")
        conn.execute(f"ALTER TABLE {schema}.jobs DROP COLUMN target")
        conn.execute(f"ALTER TABLE {schema}.workers DROP COLUMN weight")
        _drop_flow_control(conn, schema)
        conn.execute(f"DELETE FROM {schema}.schema_version WHERE version >= 2")
        conn.execute(f"INSERT INTO {schema}.events (reply, kind, attempt, worker, data) "
                     "VALUES ('run:s', 's', 's:1:1', 'old', '')")  # posted by a version-1 corral
    broker = open_broker(url)
    try:
        broker.post([("run:s", Event(START, "s:2:1", "new", at=1_790_000_000.5))])
        _, events = broker.read_events("run:s", "0", block_s=1, count=10)
    finally:
        broker.close()
    assert [(e.attempt, e.worker, e.at) for e in events] == [
        ("s:1:1", "old", None), ("s:2:1", "new", 1_790_000_000.5)]


def test_queuing_wakes_a_listener(url):
    broker = open_broker(url)
    try:
        keys = [(f"{broker.schema}.jobs", "default")]
        seen = broker._listener.seen(keys)
        broker.enqueue([AttemptMessage(id="s:1:1", run_id="r", task_id="t", queue="default",
                                       executor="thread", reply="r:s", body=b"x")])
        wait_for(lambda: broker._listener.seen(keys) > seen, "the notification")
    finally:
        broker.close()


def _drop_schema(schema: str) -> None:
    """DROP SCHEMA while the broker works in it: the server may pick the DROP as a deadlock's
    victim (it locks every table, in its own order); then it is dropped again."""
    for _ in range(10):
        try:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
            return
        except psycopg.errors.DeadlockDetected:
            continue
    raise AssertionError(f"DROP SCHEMA {schema} lost 10 deadlocks in a row")


def test_a_schema_dropped_mid_run_is_made_again_and_the_run_completes(url, tmp_path):
    from tests.helpers.fleet_tasks import ran, starts
    from tests.helpers.redis import start_worker, stop_worker

    from corral import DAG

    journal = tmp_path / "journal"
    worker = start_worker(url, "--concurrency", "2", "--heartbeat-timeout", "2s",
                          log=tmp_path / "worker.log")
    # Wider than the worker: attempts wait in the queue, and the drop loses them.
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
        _drop_schema(_schema(url))
        runner.join(60)
        assert not runner.is_alive(), "hang guard: the run did not finish"
    finally:
        stop_worker(worker)
    result = outcome["result"]
    assert result.ok, [(t.id, t.error) for t in result.tasks.values() if t.error]
    assert {t for t, _ in starts(journal)} == {f"t{k}" for k in range(n)}
