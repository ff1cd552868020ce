"""What the SQL stores do beyond the Store contract (tests/conformance/store): schema versions,
append-only tables, locks and full disks, value files, URLs and backends, and rows written by
something else. Once per backend where it applies (SQLite file, real PostgreSQL schema)."""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from corral._errors import BrokenStore, CorruptHistory, StoreTooNew
from corral._spec import TaskState
from corral.store import (
    MISSING,
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


def record(run_id: str = "r1", *, started: datetime = T0) -> RunRecord:
    return RunRecord(id=run_id, pipeline="p", status=StoredStatus.RUNNING, tasks=TASKS,
                     params={"day": "monday"}, started_at=started, host="h", user="u", pid=1,
                     lease_owner="me")


def tr(task: str, state: TaskState, attempt: int, at: float, **kw: object) -> TransitionRecord:
    return TransitionRecord(task, state, attempt, T0 + timedelta(seconds=at), at, **kw)  # type: ignore[arg-type]


def ok_history(task: str, at: float = 0.0, duration: float = 1.0) -> list[TransitionRecord]:
    return [tr(task, S.READY, 0, at), tr(task, S.RUNNING, 1, at),
            tr(task, S.SUCCEEDED, 1, at + duration, duration_s=duration)]


def sqlite_conn(store: Any) -> Any:
    """The SQLite connection under a store, for pragmas."""
    return store.connector.connection


def sql(store: Any, statement: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run ``statement`` on the store's database (``:name`` parameters on both backends)."""
    if store.connector.backend == "postgres":
        import re

        statement = re.sub(r":(\w+)", r"%(\1)s", statement)
    with store.connector.transaction() as tx:
        if statement.lstrip().upper().startswith("SELECT"):
            return tx.fetch(statement, params)
        return [{"n": tx.execute(statement, params)}]


# ---------------------------------------------------------------------------- schema


def test_fresh_store_is_at_the_latest_schema_and_reopens(store, open_test_store):
    assert store.migrate() == store.schema_version == 4
    again = open_test_store()
    assert again.migrate() == 4


def test_a_store_from_a_newer_corral_is_refused_clearly(store, open_test_store):
    with store.connector.transaction() as tx:
        tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (99, "
                   + ("0" if store.connector.backend == "sqlite" else "now()") + ")")
    with pytest.raises(StoreTooNew, match=r"version 99.*up to version 4.*upgrade corral"):
        open_test_store()


def test_history_is_append_only(store):
    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=ok_history("a"))
    with pytest.raises(BrokenStore, match="append-only"), store.connector.transaction() as tx:
        tx.execute("UPDATE batches SET worker = 'someone else'")
    assert [t.state for t in store.load_run("r1").transitions][-1] is S.SUCCEEDED


def test_history_and_values_are_json_text_not_pickles(open_test_store):
    store = open_test_store(pickle_values=True)
    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=ok_history("a") + ok_history("b", 1),
                values=[("a", {"rows": (1, 2)}), ("b", StoredStatus.FAILED)])
    [row] = sql(store, "SELECT transitions, durations, task_values FROM batches")
    assert json.loads(row["transitions"])[2] == ["a", "succeeded", 1, 1.0, 1.0]
    assert json.loads(row["durations"]) == {"a": 1.0, "b": 1.0}
    a, b = json.loads(row["task_values"])
    assert a == ["a", "tagged", ["D", [["rows", ["T", [1, 2]]]]]]
    assert b[:2] == ["b", "pickle"]  # chosen: signed, inside the JSON
    assert len(b[3]) == 64


# ---------------------------------------------------------------------------- rows from elsewhere


class Payload:
    """Unpickled, it touches a file: what an attacker would plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_row_is_corrupt_and_never_executed(store, tmp_path):
    marker = tmp_path / "pwned"
    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=ok_history("a"), values=[("a", 1)])
    evil = pickle.dumps([Payload(marker)], protocol=0).decode()  # ASCII: a text column takes it
    sql(store, "INSERT INTO batches (run_id, transitions, durations, task_values) "
               "VALUES ('r1', :t, :d, :v)", {"t": evil, "d": evil, "v": evil})
    with pytest.raises(CorruptHistory, match=r"run 'r1'.*batch \d+ of its history"):
        store.load_run("r1")
    with pytest.raises(CorruptHistory, match="r1"):
        store.task_durations("p", ["a"])
    assert not marker.exists()


def test_a_forged_or_moved_pickle_is_never_unpickled(open_test_store, tmp_path):
    marker = tmp_path / "pwned"
    store = open_test_store(pickle_values=True)
    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=ok_history("a") + ok_history("b", 1) + ok_history("c", 2),
                values=[("a", StoredStatus.FAILED)])
    [row] = sql(store, "SELECT task_values FROM batches")
    [[_, _, _, signature]] = json.loads(row["task_values"])
    payload = base64.b64encode(pickle.dumps(Payload(marker))).decode()
    forged = [["b", "pickle", payload, "0" * 64],  # a made-up signature
              ["c", "pickle", payload, signature]]  # a real one, of another value and task
    sql(store, "INSERT INTO batches (run_id, transitions, task_values) VALUES ('r1', '[]', :v)",
        {"v": json.dumps(forged)})
    run = store.load_run("r1")
    assert run.tasks["a"].value is StoredStatus.FAILED
    for task in "bc":
        assert run.tasks[task].value is MISSING
        assert "signature does not verify" in (run.tasks[task].value_error or "")
    assert not marker.exists()


def test_garbage_in_any_row_is_corrupt_history_naming_the_run(store):
    store.begin_run(record(), lease_s=30)
    sql(store, "UPDATE runs SET params = '[1, 2]' WHERE id = 'r1'")
    for read in (lambda: store.get_run("r1"), lambda: store.load_run("r1"),
                 store.list_runs):
        with pytest.raises(CorruptHistory, match=r"run 'r1'.*record cannot be read"):
            read()
    store.begin_run(record("r2"), lease_s=30)
    sql(store, "INSERT INTO events (run_id, at, kind, data) VALUES ('r2', :at, 'x', '[]')",
        {"at": T0})
    with pytest.raises(CorruptHistory, match="r2.*event log"):
        store.events("r2")


# ---------------------------------------------------------------------------- values on disk


def test_large_values_go_to_files_and_a_changed_file_is_not_read(open_test_store, tmp_path):
    store = open_test_store(value_limit=100)
    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=ok_history("a") + ok_history("b", 1),
                values=[("a", "x" * 1000), ("b", "y" * 1000)])
    files = sorted((tmp_path / "values").rglob("*.json"))
    assert len(files) == 2
    assert store.load_run("r1").tasks["a"].value == "x" * 1000
    files[0].write_text('"changed"')
    files[1].unlink()  # a lost value file: the task will re-run, nothing crashes
    run = store.load_run("r1")
    assert (run.tasks["a"].value, run.tasks["b"].value) == (MISSING, MISSING)
    assert "changed since it was stored" in (run.tasks["a"].value_error or "")


def test_prune_removes_the_value_files_of_the_runs_it_prunes(open_test_store, tmp_path):
    store = open_test_store(value_limit=10)
    now = datetime.now(UTC)
    store.begin_run(record("old", started=now - timedelta(days=10)), lease_s=0)
    store.write("old", transitions=ok_history("a"), values=[("a", "y" * 100)],
                finish=(StoredStatus.SUCCEEDED, now - timedelta(days=9)))
    assert list((tmp_path / "values").rglob("*.json"))
    assert store.prune(timedelta(days=7)) == ["old"]
    assert not list((tmp_path / "values").rglob("*.json"))


def test_runs_of_one_dag_share_its_snapshot_until_pruned(store):
    def dags() -> int:
        return int(sql(store, "SELECT count(*) AS n FROM dags")[0]["n"])

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


# ---------------------------------------------------------------------------- failures


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
            store.write("r1", transitions=ok_history("a"),
                        values=[("a", os.urandom(500_000).hex())])
        assert store.load_run("r1").transitions == ()


def test_an_unreachable_postgres_is_a_broken_store():
    pytest.importorskip("psycopg")
    from corral.store.postgres import PostgresConnector

    with pytest.raises(BrokenStore, match=r"(?s)could not connect.*:\*\*\*@127.0.0.1:1/") as err:
        PostgresConnector("postgresql://u:secret@127.0.0.1:1/x", connect_timeout=1)
    assert "Connection refused" in str(err.value)  # the server's own words, at once
    assert "secret" not in str(err.value)


# ---------------------------------------------------------------------------- URLs, backends


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
    with pytest.raises(ValueError, match=r"unknown store URL scheme 'mysql'.*postgresql://"):
        open_store("mysql://x")


def test_a_registered_backend_serves_its_scheme(tmp_path):
    from corral.store import register_backend, store_exists
    from corral.store._interface import _BACKENDS
    from corral.store.sqlite import BACKEND as SQLITE

    class Memoryish:
        """A third-party backend: here, SQLite files named by another scheme."""

        def open(self, url: str, **options: Any) -> Any:
            return SQLITE.open(str(tmp_path / url.split("://", 1)[1]), **options)

        def exists(self, url: str) -> bool:
            return SQLITE.exists(str(tmp_path / url.split("://", 1)[1]))

    register_backend("mine", Memoryish())
    try:
        assert not store_exists("mine://a.db")
        with open_store("mine://a.db") as store:
            store.begin_run(record(), lease_s=0)
        assert store_exists("mine://a.db")
        with open_store("mine://a.db") as store:
            assert store.get_run("r1").pipeline == "p"
    finally:
        _BACKENDS.pop("mine")


def test_a_backend_named_by_an_entry_point_is_found(tmp_path, monkeypatch):
    """A package that declares ``[project.entry-points."corral.stores"] ep = ...`` serves the
    scheme ``ep://`` once installed: here a distribution made on the fly."""
    dist = tmp_path / "site" / "corral_ep_store-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: corral-ep-store\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[corral.stores]\nep = corral_ep_store:BACKEND\n")
    (tmp_path / "site" / "corral_ep_store.py").write_text(
        "from corral.store.sqlite import SQLiteBackend\n"
        "class EP(SQLiteBackend):\n"
        "    def open(self, url, **options):\n"
        "        return super().open(url.replace('ep://', ''), **options)\n"
        "    def exists(self, url):\n"
        "        return super().exists(url.replace('ep://', ''))\n"
        "BACKEND = EP()\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    from corral.store._interface import _BACKENDS

    try:
        with open_store(f"ep://{tmp_path / 'ep.db'}") as store:
            assert store.list_runs() == []
        assert (tmp_path / "ep.db").exists()
    finally:
        _BACKENDS.pop("ep", None)


def test_the_sqlite_store_uses_wal(tmp_path):
    with open_store(f"sqlite:///{tmp_path / 'x.db'}") as store:
        mode = sqlite_conn(store).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_importing_corral_and_corral_store_stays_light():
    code = ("import sys, corral, corral.store; print(sorted(m for m in ('sqlite3', 'psycopg', "
            "'cloudpickle', 'orjson') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_sql_files_ship_with_the_package():
    import corral.store

    root = Path(corral.store.__file__).parent / "sql"
    assert {p.relative_to(root).as_posix() for p in root.rglob("*.sql")} >= {
        "sqlite/0001_init.sql", "sqlite/0004_json_history.sql", "sqlite/queries.sql",
        "postgres/0001_init.sql", "postgres/0004_json_history.sql", "postgres/queries.sql"}


# ---------------------------------------------------------------------------- damaged history


def _graph_of_p() -> Any:
    from corral._graph import build_graph
    from corral._options import make_spec

    def noop() -> None:
        pass

    return build_graph([make_spec(t.id, noop, options={"depends_on": list(t.deps)})
                        for t in TASKS], name="p")


@pytest.mark.parametrize(("durations", "history", "warning"), [
    ('{"a": -1.5, "b": NaN, "c": 2.0}', {"c": 2.0}, "ignored the stored durations of 2"),
    ('{"a": "soon"}', {}, "ordering tasks without run history"),
])
def test_damaged_history_is_ignored_with_a_warning_and_the_run_goes(store, durations,
                                                                    history, warning):
    import asyncio

    from corral._launch import LaunchOptions, launch

    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=ok_history("a"))
    sql(store, "INSERT INTO batches (run_id, transitions, durations) VALUES ('r1', '[]', :d)",
        {"d": durations})
    started = launch(_graph_of_p(), store, options=LaunchOptions(log_dir=None))
    assert dict(started.history) == history
    assert len(started.warnings) == 1
    assert warning in started.warnings[0]
    result = asyncio.run(asyncio.wait_for(started.run(), 60))  # (a hang guard)
    assert result.ok
