"""The store's contract, run once per backend (SQLite file, real PostgreSQL schema)."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from corral._errors import BrokenStore, CorruptHistory, RunLocked, RunNotFound, StoreTooNew
from corral._spec import TaskState
from corral.store import (
    MISSING,
    EventRecord,
    RunRecord,
    StoredStatus,
    TaskSnapshot,
    TransitionRecord,
    open_store,
)

S = TaskState
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TASKS = (
    TaskSnapshot("a", (), "fa", "thread"),
    TaskSnapshot("b", ("a",), "fb", "thread"),
    TaskSnapshot("c", ("b",), "fc", "shell"),
)


def record(run_id: str = "r1", *, pipeline: str = "p", started: datetime = T0,
           reused: tuple[str, ...] = (), resumed_from: str | None = None) -> RunRecord:
    return RunRecord(id=run_id, pipeline=pipeline, status=StoredStatus.RUNNING, tasks=TASKS,
                     params={"day": "monday"}, started_at=started, host="h", user="u", pid=1,
                     source_path="/x/pipeline.yaml", source_text="tasks: {}", reused=reused,
                     resumed_from=resumed_from, lease_owner="me")


def tr(task: str, state: TaskState, attempt: int, at: float, **kw: object) -> TransitionRecord:
    return TransitionRecord(task, state, attempt, T0 + timedelta(seconds=at), at, **kw)  # type: ignore[arg-type]


def ok_history(task: str, at: float = 0.0, duration: float = 1.0) -> list[TransitionRecord]:
    return [tr(task, S.READY, 0, at), tr(task, S.RUNNING, 1, at),
            tr(task, S.SUCCEEDED, 1, at + duration, duration_s=duration)]


def sqlite_conn(store: Any) -> Any:
    """The SQLite connection under a store, for pragmas."""
    return store.connector.connection


def finished(store, run_id: str, status=StoredStatus.SUCCEEDED, at: datetime = T0) -> None:
    store.write(run_id, finish=(status, at))


# ---------------------------------------------------------------------------- schema


def test_fresh_store_is_at_the_latest_schema_and_reopens(store, open_test_store):
    assert store.migrate() == store.schema_version == 3
    again = open_test_store()
    assert again.migrate() == 3


def test_a_store_from_a_newer_corral_is_refused_clearly(store, open_test_store):
    with store.connector.transaction() as tx:
        tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (99, "
                   + ("0" if store.connector.backend == "sqlite" else "now()") + ")")
    with pytest.raises(StoreTooNew, match=r"version 99.*up to version 3.*upgrade corral"):
        open_test_store()


# ---------------------------------------------------------------------------- round trip


def test_a_run_round_trips_with_its_history_values_and_events(store):
    store.begin_run(record(), lease_s=30, events=[EventRecord("run_started", T0, data={"k": 1})])
    history = [
        *ok_history("a"),
        tr("b", S.READY, 0, 1), tr("b", S.RUNNING, 1, 1),
        tr("b", S.RETRY_WAIT, 1, 2, duration_s=1.0, error="ValueError: x", traceback="TB"),
        tr("b", S.READY, 1, 3), tr("b", S.RUNNING, 2, 3, log_path="/l/b.2.log"),
        tr("b", S.FAILED, 2, 4, duration_s=1.0, error="CommandFailed: 3", exit_code=3,
           worker="h:1"),
        tr("c", S.UPSTREAM_FAILED, 0, 4),
    ]
    store.write("r1", transitions=history[:4], values=[("a", {"rows": [1, 2]})])
    store.write("r1", transitions=history[4:], lease=("me", 30.0))
    finished(store, "r1", StoredStatus.FAILED, T0 + timedelta(seconds=4))

    run = store.load_run("r1")
    assert run.run.status is StoredStatus.FAILED
    assert run.run.params == {"day": "monday"}
    assert run.run.tasks == TASKS
    assert run.run.source_text == "tasks: {}"
    assert run.run.duration_s == 4.0
    assert run.run.lease_until is None
    assert not run.run.lease_live
    assert [(t.task_id, t.state, t.attempt) for t in run.transitions] == [
        (t.task_id, t.state, t.attempt) for t in history]
    failed = run.transitions[-2]
    # The executor is the snapshot's; the worker the transition's own, else the batch's.
    assert (failed.exit_code, failed.executor, failed.worker, failed.at) == (
        3, "thread", "h:1", T0 + timedelta(seconds=4))
    assert run.transitions[0].worker is None
    assert run.transitions[5].traceback == "TB"
    assert run.transitions[7].log_path == "/l/b.2.log"
    a, b, c = (run.tasks[t] for t in "abc")
    assert (a.state, a.attempts, a.value) == (S.SUCCEEDED, 1, {"rows": [1, 2]})
    assert (b.state, b.attempts, b.value, b.error) == (S.FAILED, 2, MISSING, "CommandFailed: 3")
    assert (c.state, c.attempts, c.value) == (S.UPSTREAM_FAILED, 0, MISSING)
    assert [e.kind for e in store.events("r1")] == ["run_started"]
    assert store.events("r1")[0].data == {"k": 1}


def test_large_values_go_to_files_and_unpicklable_ones_are_marked(open_test_store, tmp_path):
    store = open_test_store(value_limit=100)
    store.begin_run(record(), lease_s=30)
    big = "x" * 1000
    store.write("r1", transitions=ok_history("a") + ok_history("b"),
                values=[("a", big), ("b", threading.Lock())])
    files = list((tmp_path / "values").rglob("*.pkl"))
    assert len(files) == 1
    run = store.load_run("r1")
    assert run.tasks["a"].value == big
    assert run.tasks["b"].value is MISSING
    assert "could not serialise" in (run.tasks["b"].value_error or "")

    files[0].unlink()  # a lost value file: the task will re-run, nothing crashes
    assert store.load_run("r1").tasks["a"].value is MISSING


def test_unknown_run_is_a_clear_error(store):
    with pytest.raises(RunNotFound, match="nope"):
        store.load_run("nope")
    with pytest.raises(RunNotFound):
        store.get_run("nope")


# ---------------------------------------------------------------------------- corruption

CORRUPT = [
    ("succeeded twice", ok_history("a") + [tr("a", S.SUCCEEDED, 1, 5)],
     "a", "already final"),
    ("running after succeeded", ok_history("a") + [tr("a", S.RUNNING, 2, 5)],
     "a", "already final"),
    ("running without ready", [tr("a", S.RUNNING, 1, 0)], "a", "from pending to running"),
    ("attempt skipped", [tr("a", S.READY, 0, 0), tr("a", S.RUNNING, 2, 0)],
     "a", "attempt 2 started after attempt 0"),
    ("outcome of another attempt",
     [tr("a", S.READY, 0, 0), tr("a", S.RUNNING, 1, 0), tr("a", S.FAILED, 3, 1)],
     "a", "outcome is for attempt 3"),
    ("unknown task", [tr("zz", S.READY, 0, 0)], "zz", "not in the run's DAG"),
]


@pytest.mark.parametrize(("history", "task", "reason"), [c[1:] for c in CORRUPT],
                         ids=[c[0] for c in CORRUPT])
def test_a_history_breaking_the_state_machine_is_reported_corrupt(store, history, task, reason):
    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=history)
    with pytest.raises(CorruptHistory, match=reason) as info:
        store.load_run("r1")
    assert (info.value.run_id, info.value.task) == ("r1", task)
    assert "#" in info.value.transition
    assert str(store.url) in str(info.value)


def test_reused_tasks_may_only_start_succeeded(store):
    store.begin_run(record(reused=("a",)), lease_s=30)
    store.write("r1", transitions=[tr("a", S.SUCCEEDED, 0, 0)], values=[("a", 1)])
    assert store.load_run("r1").tasks["a"].value == 1
    store.begin_run(record("r2", reused=("a",)), lease_s=30)
    store.write("r2", transitions=ok_history("a"))
    with pytest.raises(CorruptHistory, match="started this task as already succeeded"):
        store.load_run("r2")


def test_history_is_append_only(store):
    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=ok_history("a"))
    with pytest.raises(BrokenStore, match="append-only"), store.connector.transaction() as tx:
        tx.execute("UPDATE batches SET worker = 'someone else'")
    assert [t.state for t in store.load_run("r1").transitions][-1] is S.SUCCEEDED


# ---------------------------------------------------------------------------- atomicity/errors


def test_a_failed_batch_leaves_nothing_half_written(store):
    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=ok_history("a"), values=[("a", 1)])
    with pytest.raises(BrokenStore, match=r"(?s)could not write.*store: "):
        # The event breaks a NOT NULL constraint: the batch before it is rolled back too.
        store.write("r1", transitions=ok_history("b"), values=[("b", 2)],
              events=[EventRecord(None, T0)])  # type: ignore[arg-type]
    run = store.load_run("r1")
    assert {t.task_id for t in run.transitions} == {"a"}
    assert run.tasks["a"].value == 1
    assert store.events("r1") == []


def test_a_locked_database_is_a_clear_error_naming_the_store(store_url, open_test_store):
    store = open_test_store(lock_timeout=0.2)
    store.begin_run(record(), lease_s=30)
    other: Any
    if store_url.startswith("sqlite"):
        import sqlite3

        other = sqlite3.connect(store_url[len("sqlite:///"):], isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        other = psycopg.connect(store_url)
        other.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
    try:
        with pytest.raises(BrokenStore, match="store: ") as info:
            store.write("r1", finish=(StoredStatus.SUCCEEDED, T0))
        assert store.url in str(info.value)
    finally:
        other.rollback() if hasattr(other, "rollback") else None
        other.close()
    assert store.get_run("r1").status is StoredStatus.RUNNING


def test_a_full_disk_is_a_clear_error_with_nothing_written(tmp_path):
    url = f"sqlite:///{tmp_path / 'full.db'}"
    with open_store(url, values_dir=tmp_path / "v") as store:
        store.begin_run(record(), lease_s=30)
        pages = sqlite_conn(store).execute("PRAGMA page_count").fetchone()[0]
        sqlite_conn(store).execute(f"PRAGMA max_page_count = {pages + 1}")
        with pytest.raises(BrokenStore, match=r"(?s)full.*store: sqlite:///"):
            store.write("r1", transitions=ok_history("a"), values=[("a", b"x" * 500_000)])
        assert store.load_run("r1").transitions == ()


def test_an_unreachable_postgres_is_a_broken_store():
    pytest.importorskip("psycopg")
    from corral.store.postgres import PostgresConnector

    with pytest.raises(BrokenStore, match=r"(?s)could not connect.*:\*\*\*@127.0.0.1:1/") as err:
        PostgresConnector("postgresql://u:secret@127.0.0.1:1/x", connect_timeout=1)
    assert "Connection refused" in str(err.value)  # the server's own words, at once
    assert "secret" not in str(err.value)


# ---------------------------------------------------------------------------- resume support


def test_latest_unfinished_skips_succeeded_and_resumed_runs(store):
    assert store.latest_unfinished("p") is None
    for k, status in enumerate([StoredStatus.FAILED, StoredStatus.SUCCEEDED]):
        store.begin_run(record(f"r{k}", started=T0 + timedelta(minutes=k)), lease_s=0)
        finished(store, f"r{k}", status)
    store.begin_run(record("other", pipeline="q", started=T0 + timedelta(hours=1)), lease_s=0)
    assert store.latest_unfinished("p").id == "r0"
    store.begin_run(record("r2", started=T0 + timedelta(minutes=5)), lease_s=0)  # crashed
    assert store.latest_unfinished("p").id == "r2"
    store.begin_run(record("r3", started=T0 + timedelta(minutes=6), resumed_from="r2"),
                    lease_s=30, resume_of="r2")
    assert store.get_run("r2").status is StoredStatus.CRASHED
    assert store.get_run("r2").resumed_by == "r3"
    assert store.latest_unfinished("p").id == "r3"
    assert [e.kind for e in store.events("r2")] == ["resumed"]


def test_resuming_a_run_with_a_live_lease_is_refused(store):
    store.begin_run(record("r1"), lease_s=60)
    assert store.get_run("r1").lease_live
    with pytest.raises(RunLocked, match="'r1' is held by me"):
        store.begin_run(record("r2", resumed_from="r1"), lease_s=60, resume_of="r1")
    with pytest.raises(RunNotFound):  # nothing of the refused run was written
        store.get_run("r2")


def test_only_one_resume_wins_and_succeeded_runs_are_not_resumed(store):
    store.begin_run(record("r1"), lease_s=0)  # a lease that has lapsed: its process died
    store.begin_run(record("r2"), lease_s=30, resume_of="r1")
    with pytest.raises(RunLocked, match="run r2"):
        store.begin_run(record("r3"), lease_s=30, resume_of="r1")
    finished(store, "r2")
    with pytest.raises(RunNotFound, match="nothing to resume"):
        store.begin_run(record("r4"), lease_s=30, resume_of="r2")
    with pytest.raises(RunNotFound):
        store.begin_run(record("r5"), lease_s=30, resume_of="nope")


def test_heartbeat_extends_the_lease_until_the_run_ends(store):
    store.begin_run(record("r1"), lease_s=0)
    assert not store.get_run("r1").lease_live
    store.write("r1", lease=("me", 60.0))
    assert store.get_run("r1").lease_live
    store.write("r1", lease=("someone else", 0.0))  # not the owner: no effect
    assert store.get_run("r1").lease_live
    finished(store, "r1")
    store.write("r1", lease=("me", 60.0))  # a late heartbeat does not revive a finished run
    assert not store.get_run("r1").lease_live


# ---------------------------------------------------------------------------- history


def test_list_runs_newest_first_with_filters(store):
    for k in range(4):
        store.begin_run(record(f"r{k}", pipeline="p" if k % 2 else "q",
                               started=T0 + timedelta(minutes=k)), lease_s=0)
    finished(store, "r1", StoredStatus.FAILED)
    assert [r.id for r in store.list_runs()] == ["r3", "r2", "r1", "r0"]
    assert [r.id for r in store.list_runs(limit=2)] == ["r3", "r2"]
    assert [r.id for r in store.list_runs(pipeline="p")] == ["r3", "r1"]
    assert [r.id for r in store.list_runs(status="failed")] == ["r1"]
    # r0 and r2 never ended and their leases lapsed: they crashed, as far as anyone can see.
    assert [r.id for r in store.list_runs(status=StoredStatus.CRASHED, pipeline="q")] == [
        "r2", "r0"]
    assert [r.observed_status for r in store.list_runs(pipeline="q")] == [
        StoredStatus.CRASHED, StoredStatus.CRASHED]
    assert store.list_runs(status=StoredStatus.RUNNING) == []
    store.begin_run(record("live", pipeline="q", started=T0 + timedelta(hours=1)), lease_s=60)
    assert [r.id for r in store.list_runs(status="running")] == ["live"]
    assert store.get_run("live").observed_status is StoredStatus.RUNNING
    with pytest.raises(ValueError):
        store.list_runs(status="bogus")


def test_task_durations_are_medians_of_successful_attempts(store):
    for k, (da, db) in enumerate([(1.0, 10.0), (2.0, 20.0), (9.0, 30.0)]):
        store.begin_run(record(f"r{k}"), lease_s=0)
        store.write(f"r{k}", transitions=ok_history("a", duration=da) + ok_history("b", 1, db))
    store.begin_run(record("failing"), lease_s=0)
    store.write("failing", transitions=[
        tr("c", S.READY, 0, 0), tr("c", S.RUNNING, 1, 0),
        tr("c", S.FAILED, 1, 100, duration_s=100.0)])
    store.begin_run(record("elsewhere", pipeline="other"), lease_s=0)
    store.write("elsewhere", transitions=ok_history("a", duration=500.0))
    assert store.task_durations("p", ["a", "b", "c", "zz"]) == {"a": 2.0, "b": 20.0}
    assert store.task_durations("p", []) == {}


def test_runs_of_one_dag_share_its_snapshot_until_pruned(store):
    def dags() -> int:
        with store.connector.transaction(write=False) as tx:
            return int(tx.fetch("SELECT count(*) AS n FROM dags")[0]["n"])

    old = datetime.now(UTC) - timedelta(days=10)
    store.begin_run(record("r1", started=old), lease_s=0)
    store.begin_run(record("r2", started=old), lease_s=0)
    other = TaskSnapshot("a", (), "changed", "thread")
    store.begin_run(record("r3", started=datetime.now(UTC)).evolve(tasks=(other,)), lease_s=0)
    assert dags() == 2
    assert store.get_run("r2").tasks == TASKS
    assert store.get_run("r3").tasks == (other,)
    assert [len(r.tasks) for r in store.list_runs()] == [1, 3, 3]
    assert sorted(store.prune(timedelta(days=7))) == ["r1", "r2"]
    assert dags() == 1


def test_prune_removes_old_runs_with_their_value_files(open_test_store, tmp_path):
    store = open_test_store(value_limit=10)
    now = datetime.now(UTC)
    store.begin_run(record("old", started=now - timedelta(days=10)), lease_s=0)
    store.write("old", transitions=ok_history("a"), values=[("a", "y" * 100)],
                finish=(StoredStatus.SUCCEEDED, now - timedelta(days=9)))
    store.begin_run(record("new", started=now), lease_s=0)
    finished(store, "new", at=now)
    store.begin_run(record("old-but-live", started=now - timedelta(days=10)), lease_s=600)
    assert list((tmp_path / "values").rglob("*.pkl"))
    assert store.prune(timedelta(days=7)) == ["old"]
    assert [r.id for r in store.list_runs()] == ["new", "old-but-live"]
    assert not list((tmp_path / "values").rglob("*.pkl"))
    with pytest.raises(RunNotFound):
        store.load_run("old")


# ---------------------------------------------------------------------------- URLs


def test_urls_resolve_from_argument_env_and_default(tmp_path, monkeypatch):
    from corral.store import DEFAULT_URL, resolve_url

    monkeypatch.delenv("CORRAL_STORE", raising=False)
    assert resolve_url() == DEFAULT_URL
    monkeypatch.setenv("CORRAL_STORE", "sqlite:///elsewhere.db")
    assert resolve_url() == "sqlite:///elsewhere.db"
    assert resolve_url("postgresql://x") == "postgresql://x"
    monkeypatch.delenv("CORRAL_STORE")
    monkeypatch.chdir(tmp_path)
    with open_store() as store:
        assert store.url == DEFAULT_URL
    assert (tmp_path / ".corral" / "corral.db").exists()
    with pytest.raises(ValueError, match="unknown store URL scheme 'mysql'"):
        open_store("mysql://x")


def test_the_sqlite_store_uses_wal(tmp_path):
    with open_store(f"sqlite:///{tmp_path / 'x.db'}") as store:
        mode = sqlite_conn(store).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_importing_corral_and_corral_store_stays_light():
    code = ("import sys, corral, corral.store; "
            "print(sorted(m for m in ('sqlite3', 'psycopg', 'cloudpickle') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_sql_files_ship_with_the_package():
    import corral.store

    root = Path(corral.store.__file__).parent / "sql"
    assert {p.relative_to(root).as_posix() for p in root.rglob("*.sql")} >= {
        "sqlite/0001_init.sql", "sqlite/queries.sql",
        "postgres/0001_init.sql", "postgres/queries.sql"}
