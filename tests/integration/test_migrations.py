"""The upgrade path of the store's schema, once per backend: a store written by an older corral
opens in this one with its history intact.

Version 1 stored a row per transition and per value; version 2 packs them into one row per
group commit (moved by a Python step) and version 3 drops the version-1 tables. Each test
builds a version-1 store with the SQL version 1 ran, then migrates it.
"""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral._spec import TaskState
from corral.store import MISSING, StoredStatus, open_store

S = TaskState
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# How version 1 wrote its snapshot (objects, not lists) and its rows.
V1_SNAPSHOT = {"tasks": [
    {"id": "a", "deps": [], "fingerprint": "fa", "executor": "thread"},
    {"id": "b", "deps": ["a"], "fingerprint": "fb", "executor": "shell"},
    {"id": "c", "deps": [], "fingerprint": "fc", "executor": "thread"},
]}
V1_TRANSITIONS = [  # task, state, attempt, clock, duration, error, traceback, exit, worker, log
    ("a", "ready", 0, 0.0, None, None, None, None, "h:1", None),
    ("a", "running", 1, 0.0, None, None, None, None, "h:1", "/logs/a.1.log"),
    ("a", "succeeded", 1, 2.0, 2.0, None, None, None, "h:1", None),
    ("b", "ready", 0, 2.0, None, None, None, None, "h:1", None),
    ("b", "running", 1, 2.0, None, None, None, None, "h:1", None),
    ("b", "failed", 1, 3.0, 1.0, "CommandFailed: 3", "TB", 3, "h:2", None),
    ("c", "ready", 0, 3.0, None, None, None, None, "h:1", None),
    ("c", "running", 1, 3.0, None, None, None, None, "h:1", None),
    ("c", "succeeded", 1, 3.5, 0.5, None, None, None, "h:1", None),
]


def _param(backend: str, name: str) -> str:
    return f":{name}" if backend == "sqlite" else f"%({name})s"


def write_v1_store(store: Any, big_value_path: Path) -> None:
    """A failed run as version 1 stored it: a and c succeeded (c's value in a file), b
    failed."""
    backend = store.connector.backend
    p = lambda name: _param(backend, name)  # noqa: E731
    cast = "::jsonb" if backend == "postgres" else ""
    with store.connector.transaction() as tx:
        tx.execute(
            f"INSERT INTO runs (id, pipeline, status, dag_hash, snapshot, params, started_at,"
            f" finished_at, host, user_name, pid) VALUES ({p('id')}, 'p', 'failed', 'h',"
            f" {p('snapshot')}{cast}, '{{}}'{cast}, {p('t0')}, {p('t0')}, 'h', 'u', 1)",
            {"id": "old", "snapshot": json.dumps(V1_SNAPSHOT), "t0": T0})
        columns = ("task_id", "state", "attempt", "clock", "duration_s", "error", "traceback",
                   "exit_code", "worker", "log_path")
        tx.executemany(
            f"INSERT INTO transitions (run_id, at, executor, {', '.join(columns)}) VALUES "
            f"('old', {p('at')}, 'thread', {', '.join(p(c) for c in columns)})",
            [{"at": T0, **dict(zip(columns, row, strict=True))} for row in V1_TRANSITIONS])
        tx.execute(
            f"INSERT INTO task_values (run_id, task_id, codec, size, data, path, error) VALUES"
            f" ('old', 'a', 'cloudpickle', 5, {p('data')}, NULL, NULL)",
            {"data": pickle.dumps({"rows": 3})})
        tx.execute(
            f"INSERT INTO task_values (run_id, task_id, codec, size, data, path, error) VALUES"
            f" ('old', 'c', 'cloudpickle', 5, NULL, {p('path')}, NULL)",
            {"path": str(big_value_path)})
        tx.execute(f"INSERT INTO events (run_id, at, kind, data) VALUES ('old', {p('t0')},"
                   f" 'run_started', '{{}}'{cast})", {"t0": T0})


def test_a_version_1_store_upgrades_with_its_history_values_and_estimates(store_url, tmp_path):
    values = tmp_path / "values"
    big = tmp_path / "c-value.pkl"
    big.write_bytes(pickle.dumps("big"))
    with open_store(store_url, values_dir=values, migrate=False) as store:
        assert store.migrate(target=1) == 1
        write_v1_store(store, big)

    with open_store(store_url, values_dir=values) as store:  # upgrades on open
        assert store.migrate() == store.schema_version == 3
        run = store.load_run("old")
        assert run.run.status is StoredStatus.FAILED
        assert [(t.id, t.deps, t.executor) for t in run.run.tasks] == [
            ("a", (), "thread"), ("b", ("a",), "shell"), ("c", (), "thread")]
        assert [(t.task_id, t.state, t.attempt, t.clock) for t in run.transitions] == [
            (r[0], S(r[1]), r[2], r[3]) for r in V1_TRANSITIONS]
        running_a, failed_b = run.transitions[1], run.transitions[5]
        assert running_a.log_path == "/logs/a.1.log"
        assert (failed_b.error, failed_b.traceback, failed_b.exit_code, failed_b.worker) == (
            "CommandFailed: 3", "TB", 3, "h:2")
        assert failed_b.at == T0.replace(second=8)  # the run's start plus the clock
        assert (run.tasks["a"].state, run.tasks["a"].value) == (S.SUCCEEDED, {"rows": 3})
        assert (run.tasks["b"].state, run.tasks["b"].value) == (S.FAILED, MISSING)
        assert run.tasks["c"].value == "big"
        assert store.task_durations("p", ["a", "b", "c"]) == {"a": 2.0, "c": 0.5}
        assert [e.kind for e in store.events("old")] == ["run_started"]
        # The version-1 tables are gone; the history lives in batches only.
        with store.connector.transaction(write=False) as tx:
            assert tx.fetch("SELECT count(*) AS n FROM batches")[0]["n"] == 1
            tx.fetch("SELECT 1 FROM runs")  # the transaction is still usable
        assert store.prune(0) == ["old"]


def test_an_empty_version_1_store_upgrades(store_url, tmp_path):
    with open_store(store_url, values_dir=tmp_path, migrate=False) as store:
        assert store.migrate(target=1) == 1
    with open_store(store_url, values_dir=tmp_path) as store:
        assert store.schema_version == 3
        assert store.list_runs() == []
