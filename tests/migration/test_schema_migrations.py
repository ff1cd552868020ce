"""The upgrade path of the store's schema, once per backend: a store written by each older
corral (schema versions 1, 2 and 3) and upgraded equals one made fresh by this corral with the
same run — its schema, and its data read back through the Store protocol.

What each version wrote, as it wrote it:

- version 1: a row per transition (``transitions``) and per value (``task_values``), the DAG
  snapshot in ``runs.snapshot``;
- version 2: ``dags``, and one ``batches`` row per group commit, its fields pickled (the
  version-1 tables still there, empty);
- version 3: the same without the version-1 tables.

Version 4 rewrites the pickled history as JSON with an unpickler that refuses every global.
Values that are plain data survive; others (never signed) are not carried over and re-run on
resume, saying why. A crafted pickle in an old store runs nothing during the upgrade.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.postgres import schema_url

from corral._errors import CorruptHistory
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
from corral.store._records import dag_hash

S = TaskState
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TASKS = (
    TaskSnapshot("a", (), "fa", "thread"),
    TaskSnapshot("b", ("a",), "fb", "shell"),
    TaskSnapshot("c", (), "fc", "thread"),
    TaskSnapshot("d", (), "fd", "thread"),
    TaskSnapshot("e", (), "fe", "thread"),
)
HASH = dag_hash(TASKS)
# task, state, attempt, clock, duration, error, traceback, exit code, log path, worker
HISTORY = [
    ("a", "ready", 0, 0.0, None, None, None, None, None, None),
    ("a", "running", 1, 0.0, None, None, None, None, "/logs/a.1.log", "h:1"),
    ("a", "succeeded", 1, 2.0, 2.0, None, None, None, None, None),
    ("b", "ready", 0, 2.0, None, None, None, None, None, None),
    ("b", "running", 1, 2.0, None, None, None, None, None, None),
    ("b", "failed", 1, 3.0, 1.0, "CommandFailed: 3", "TB", 3, None, "h:2"),
    *[row for t in "cde" for row in (
        (t, "ready", 0, 3.0, None, None, None, None, None, None),
        (t, "running", 1, 3.0, None, None, None, None, None, None),
        (t, "succeeded", 1, 3.5, 0.5, None, None, None, None, None))],
]


class Point:
    """A value that is not plain data: an old store pickled it, unsigned."""

    def __init__(self, x: int) -> None:
        self.x = x


VALUES = {"a": {"rows": 3}, "c": (1, "two", b"3"), "d": Point(4)}
EVENT = EventRecord("run_started", T0, data={"concurrency": 2})


@pytest.fixture(params=["sqlite", "postgres"])
def store_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty stores of one backend: one to upgrade, one made fresh."""
    if request.param == "sqlite":
        with nullcontext(f"sqlite:///{tmp_path / 'old.db'}") as old, nullcontext(
                f"sqlite:///{tmp_path / 'fresh.db'}") as fresh:
            yield old, fresh
    else:
        with schema_url("corral_old") as old, schema_url("corral_fresh") as fresh:
            yield old, fresh


def sql(store: Any, statement: str, params: dict[str, Any] | None = None) -> None:
    if store.connector.backend == "postgres":
        import re

        statement = re.sub(r"(?<!:):(\w+)", r"%(\1)s", statement)
    with store.connector.transaction() as tx:
        tx.execute(statement, params)


def insert_run(store: Any, version: int, run_id: str = "old") -> None:
    pg = store.connector.backend == "postgres"
    snapshot = {"tasks": [t._asdict() for t in TASKS]} if version == 1 else {}
    sql(store, "INSERT INTO runs (id, pipeline, status, dag_hash, snapshot, params, started_at,"
               " finished_at, host, user_name, pid, lease_owner) VALUES (:id, 'p', 'failed',"
               f" :hash, :snapshot{'::jsonb' if pg else ''}, '{{\"k\": \"v\"}}', :t0, :t1, 'h',"
               " 'u', 1, 'me')",
        {"id": run_id, "hash": HASH, "snapshot": json.dumps(snapshot), "t0": T0,
         "t1": T0 + timedelta(seconds=4)})
    sql(store, "INSERT INTO events (run_id, at, kind, data) VALUES (:id, :at, 'run_started',"
               f" :data{'::jsonb' if pg else ''})",
        {"id": run_id, "at": T0, "data": json.dumps(dict(EVENT.data))})


def write_v1(store: Any, values_dir: Path) -> None:
    insert_run(store, 1)
    columns = ("task_id", "state", "attempt", "clock", "duration_s", "error", "traceback",
               "exit_code", "log_path", "worker")
    for row in HISTORY:
        sql(store, f"INSERT INTO transitions (run_id, at, executor, {', '.join(columns)}) "
                   f"VALUES ('old', :at, 'thread', {', '.join(':' + c for c in columns)})",
            {"at": T0 + timedelta(seconds=row[3]), **dict(zip(columns, row, strict=True))})
    for task, value in VALUES.items():
        sql(store, "INSERT INTO task_values (run_id, task_id, codec, size, data) VALUES ('old',"
                   " :task, 'cloudpickle', 1, :data)", {"task": task, "data": pickle.dumps(value)})
    big = values_dir / "e.pkl"  # a value too large to store inline went to a file
    big.parent.mkdir(parents=True, exist_ok=True)
    big.write_bytes(pickle.dumps("big"))
    sql(store, "INSERT INTO task_values (run_id, task_id, codec, size, path) VALUES ('old', 'e',"
               " 'cloudpickle', 1, :path)", {"path": str(big)})


def packed(row: tuple[Any, ...]) -> list[Any]:
    entry = list(row)
    while entry and entry[-1] is None:
        entry.pop()
    return entry


def write_v2_or_v3(store: Any, version: int, values_dir: Path,
                   transitions: bytes | None = None) -> None:
    """The run as versions 2 and 3 wrote it: its DAG once, its history pickled in batches."""
    insert_run(store, version)
    pg = store.connector.backend == "postgres"
    sql(store, f"INSERT INTO dags (hash, tasks) VALUES (:hash, :tasks{'::json' if pg else ''})",
        {"hash": HASH, "tasks": json.dumps([list(t) for t in TASKS])})
    entries = [packed(r) for r in HISTORY]
    durations = {e[0]: e[4] for e in entries if e[1] == "succeeded"}
    values = [(t, "cloudpickle", 1, pickle.dumps(v), None, None) for t, v in VALUES.items()]
    big = values_dir / "e.pkl"
    big.parent.mkdir(parents=True, exist_ok=True)
    big.write_bytes(pickle.dumps("big"))
    values.append(("e", "cloudpickle", 1, None, str(big), None))
    for half, their_values in ((entries[:6], []), (entries[6:], values)):
        sql(store, "INSERT INTO batches (run_id, worker, transitions, durations, task_values)"
                   " VALUES ('old', NULL, :t, :d, :v)",
            {"t": transitions or pickle.dumps(half), "d": pickle.dumps(
                {k: v for k, v in durations.items() if any(e[0] == k for e in half)}),
             "v": pickle.dumps(their_values) if their_values else None})


def write_fresh(store: Any) -> None:
    """The same run, recorded by this corral."""
    store.begin_run(RunRecord(
        id="old", pipeline="p", status=StoredStatus.RUNNING, tasks=TASKS, params={"k": "v"},
        started_at=T0, host="h", user="u", pid=1, lease_owner="me"), lease_s=0,
        events=[EVENT])
    records = [TransitionRecord(r[0], S(r[1]), r[2], T0 + timedelta(seconds=r[3]), r[3],
                                duration_s=r[4], error=r[5], traceback=r[6], exit_code=r[7],
                                log_path=r[8], worker=r[9]) for r in HISTORY]
    store.write("old", transitions=records[:6])
    store.write("old", transitions=records[6:], values=[*VALUES.items(), ("e", "big")],
                finish=(StoredStatus.FAILED, T0 + timedelta(seconds=4)))


def schema(store: Any) -> Any:
    """Tables, columns, indexes and triggers, as the database describes them."""
    with store.connector.transaction(write=False) as tx:
        if store.connector.backend == "sqlite":
            return tx.fetch("SELECT type, name, tbl_name, sql FROM sqlite_master "
                            "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")
        return [
            tx.fetch("SELECT table_name, column_name, data_type, is_nullable, column_default, "
                     "is_identity FROM information_schema.columns "
                     "WHERE table_schema = current_schema() ORDER BY table_name, column_name"),
            tx.fetch("SELECT tablename, indexname, replace(indexdef, current_schema() || '.', "
                     "'') AS indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                     "ORDER BY indexname"),
            tx.fetch("SELECT event_object_table, trigger_name, action_timing, "
                     "event_manipulation FROM information_schema.triggers "
                     "WHERE trigger_schema = current_schema() ORDER BY trigger_name"),
        ]


def through_the_protocol(store: Any) -> dict[str, Any]:
    run = store.load_run("old")
    return {
        "record": run.run.evolve(lease_until=None),
        "transitions": run.transitions,
        "tasks": {t: (s.state, s.attempts, s.error) for t, s in run.tasks.items()},
        "events": [(e.kind, e.at, dict(e.data)) for e in store.events("old")],
        "durations": store.task_durations("p", [t.id for t in TASKS]),
        "listed": [r.evolve(lease_until=None) for r in store.list_runs()],
    }


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_store_of_each_older_version_upgrades_to_what_a_fresh_one_holds(
        store_urls, tmp_path, version):
    old_url, fresh_url = store_urls
    values_dir = tmp_path / "values"
    with open_store(old_url, values_dir=values_dir, migrate=False) as store:
        assert store.migrate(target=version) == version
        if version == 1:
            write_v1(store, values_dir)
        else:
            write_v2_or_v3(store, version, values_dir)
    with open_store(fresh_url, values_dir=tmp_path / "fresh-values", key="k") as fresh:
        write_fresh(fresh)
        expected = through_the_protocol(fresh)
        fresh_schema = schema(fresh)

    with open_store(old_url, values_dir=values_dir, key="k") as store:  # upgrades on open
        assert store.migrate() == store.schema_version == 4
        assert schema(store) == fresh_schema
        assert through_the_protocol(store) == expected
        tasks = store.load_run("old").tasks
        assert tasks["a"].value == {"rows": 3}
        assert tasks["c"].value == (1, "two", b"3")  # a tuple stays a tuple
        for task in "de":  # an object, and a value in a file: never signed, not carried over
            assert tasks[task].value is MISSING
            assert "not carried over" in (tasks[task].value_error or "")
        assert store.prune(0) == ["old"]


def test_an_empty_store_of_each_older_version_upgrades(store_urls, tmp_path):
    old_url, _ = store_urls
    for version in (1, 2, 3):
        with open_store(old_url, values_dir=tmp_path, migrate=False) as store:
            store.migrate(target=version)
    with open_store(old_url, values_dir=tmp_path) as store:
        assert store.schema_version == 4
        assert store.list_runs() == []


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_in_an_old_store_runs_nothing_during_the_upgrade(store_urls, tmp_path):
    old_url, _ = store_urls
    marker = tmp_path / "pwned"
    with open_store(old_url, values_dir=tmp_path, migrate=False) as store:
        store.migrate(target=3)
        write_v2_or_v3(store, 3, tmp_path, transitions=pickle.dumps([Payload(marker)]))
        insert_run(store, 3, run_id="clean")
    with open_store(old_url, values_dir=tmp_path) as store:
        with pytest.raises(CorruptHistory, match="could not be carried over to schema version 4"):
            store.load_run("old")
        assert store.load_run("clean").transitions == ()  # the rest of the store is usable
    assert not marker.exists()
