"""Migration steps SQL cannot do alone: each runs right after its version's SQL script, in the
same transaction, so a store is either wholly migrated to that version or not at all.

Version 2 packs the history: version 1 stored a row per transition (``transitions``) and per
value (``task_values``); version 2 stores a row per group commit (``batches``). Moving the rows
needs the packing code (pickled entries and values), so it is Python, and it runs through
the same :class:`~corral.store._base.Tx` on both backends.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from corral.store._base import (
    StoredValue,
    TaskSnapshot,
    Tx,
    batch_row,
    json_column,
    load_queries,
    packed_entry,
)

__all__ = ["PYTHON_STEPS"]


def pack_v1_history(tx: Tx, backend: str) -> None:
    """Move every run's v1 transitions and values into one batch per run, in order, and each
    distinct v1 snapshot into ``dags``."""
    queries = load_queries(backend)
    insert = queries["insert_batch"]
    entries: dict[str, list[list[Any]]] = {}
    for row in tx.fetch("SELECT * FROM transitions ORDER BY seq"):
        entries.setdefault(row["run_id"], []).append(packed_entry(
            row["task_id"], row["state"], row["attempt"], row["clock"], row["duration_s"],
            row["error"], row["traceback"], row["exit_code"], row["log_path"], row["worker"]))
    values: dict[str, list[tuple[Any, ...]]] = {}
    for row in tx.fetch("SELECT * FROM task_values ORDER BY run_id, task_id"):
        data = bytes(row["data"]) if row["data"] is not None else None
        values.setdefault(row["run_id"], []).append(tuple(StoredValue(
            row["task_id"], row["codec"], row["size"], data, row["path"], row["error"])))
    for run_id in sorted(entries.keys() | values.keys()):
        tx.execute(insert, batch_row(run_id, None, entries.get(run_id, []),
                                     values.get(run_id, [])))
    for run in tx.fetch("SELECT id, dag_hash, snapshot FROM runs ORDER BY started_at"):
        tasks = [TaskSnapshot.from_json(t) for t in json_column(run["snapshot"])["tasks"]]
        tx.execute(queries["insert_dag"], {"hash": run["dag_hash"], "tasks": json.dumps(tasks)})
    tx.execute("UPDATE runs SET snapshot = '{}'")


# version -> step(transaction, backend)
PYTHON_STEPS: dict[int, Callable[[Tx, str], None]] = {2: pack_v1_history}
