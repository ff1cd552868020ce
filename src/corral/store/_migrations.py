"""Migration steps SQL cannot do alone: each runs right after its version's SQL script, in the
same transaction, so a store is either wholly migrated to that version or not at all.

- **Version 2** packs the history: version 1 stored a row per transition (``transitions``)
  and per value (``task_values``); version 2 stores a row per group commit (``batches``), its
  fields pickled as version 2 did.
- **Version 4** removes every pickle. Each version-3 batch (``batches_v3``) is read with
  :func:`~corral.store._codec.data_only_loads`, an unpickler that refuses every global (a
  crafted row runs nothing here either), and written again as JSON:

  - its transitions as they were; a batch that cannot be read so is kept as
    ``{"unreadable": why}``, which makes its run's history :class:`CorruptHistory` when loaded
    (the rest of the store stays usable);
  - its durations, or none (they only feed estimates);
  - each value that is plain data (JSON, or tagged JSON for tuples, bytes, sets...) as such;
    any other value, and every value pickled to a file, is *not* carried over: it was never
    signed, so nothing vouches for it. Its task counts as not stored and re-runs on resume,
    saying why.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import orjson

from corral.store._codec import ValueCodec, data_only_loads, dumps
from corral.store._connector import Tx, load_queries
from corral.store._records import TaskSnapshot, json_column, packed_entry, snapshot_json

__all__ = ["PYTHON_STEPS"]

# Batches converted per query: a store's history is never read into memory whole.
_PAGE = 500


def _param(backend: str, name: str) -> str:
    return f":{name}" if backend == "sqlite" else f"%({name})s"


def _params(backend: str) -> Callable[[str], str]:
    """``p(name)``: the placeholder of parameter ``name`` in ``backend``'s query style."""
    return lambda name: _param(backend, name)


# ---------------------------------------------------------------------------- version 2


def _v2_batch(run_id: str, entries: list[list[Any]], values: list[tuple[Any, ...]]
              ) -> dict[str, Any]:
    """A batch as version 2 stored it (pickled), for the version-4 step to read back."""
    durations = {e[0]: e[4] for e in entries
                 if len(e) > 4 and e[4] is not None and e[1] == "succeeded"}
    return {"run_id": run_id, "worker": None,
            "transitions": pickle.dumps(entries, pickle.HIGHEST_PROTOCOL),
            "durations": pickle.dumps(durations, pickle.HIGHEST_PROTOCOL) if durations else None,
            "task_values": pickle.dumps(values, pickle.HIGHEST_PROTOCOL) if values else None}


def pack_v1_history(tx: Tx, backend: str) -> None:
    """Move every run's v1 transitions and values into one batch per run, in order, and each
    distinct v1 snapshot into ``dags``."""
    p = _params(backend)
    insert = (f"INSERT INTO batches (run_id, worker, transitions, durations, task_values) "
              f"VALUES ({p('run_id')}, {p('worker')}, {p('transitions')}, {p('durations')}, "
              f"{p('task_values')})")
    entries: dict[str, list[list[Any]]] = {}
    for row in tx.fetch("SELECT * FROM transitions ORDER BY seq"):
        entries.setdefault(row["run_id"], []).append(packed_entry(
            row["task_id"], row["state"], row["attempt"], row["clock"], row["duration_s"],
            row["error"], row["traceback"], row["exit_code"], row["log_path"], row["worker"]))
    values: dict[str, list[tuple[Any, ...]]] = {}
    for row in tx.fetch("SELECT * FROM task_values ORDER BY run_id, task_id"):
        data = bytes(row["data"]) if row["data"] is not None else None
        values.setdefault(row["run_id"], []).append(
            (row["task_id"], row["codec"], row["size"], data, row["path"], row["error"]))
    for run_id in sorted(entries.keys() | values.keys()):
        tx.execute(insert, _v2_batch(run_id, entries.get(run_id, []), values.get(run_id, [])))
    for run in tx.fetch("SELECT id, dag_hash, snapshot FROM runs ORDER BY started_at"):
        tasks = [TaskSnapshot.from_json(t) for t in json_column(run["snapshot"])["tasks"]]
        tx.execute(load_queries(backend)["insert_dag"], {"hash": run["dag_hash"],
                                                         "tasks": snapshot_json(tasks).decode()})
    tx.execute("UPDATE runs SET snapshot = '{}'")


# ---------------------------------------------------------------------------- version 4

_NOT_CARRIED = ("stored by corral before schema version 4 as an unsigned pickle, and not "
                "carried over")


def _transitions(raw: Any) -> str:
    try:
        entries = data_only_loads(bytes(raw))
        if type(entries) is not list or not all(type(e) is list for e in entries):
            raise ValueError(f"a {type(entries).__name__}, not a list of transitions")
        return dumps(entries)
    except Exception as exc:
        return dumps({"unreadable": f"{type(exc).__name__}: {exc}"})


def _durations(raw: Any) -> str | None:
    if raw is None:
        return None
    try:
        durations = data_only_loads(bytes(raw))
        if type(durations) is not dict:
            return None
        return dumps({k: v for k, v in durations.items()
                      if type(k) is str and type(v) in (int, float)}) or None
    except Exception:  # only estimates: a batch without them is fine
        return None


def _value(fields: Any, codec: ValueCodec) -> list[Any]:
    task_id, _codec, _size, data, path, error = fields
    if error:
        return [task_id, "error", str(error)]
    if data is None:
        return [task_id, "error", f"{_NOT_CARRIED} (it was in the file {path})"]
    try:
        fmt, encoded = codec.encode(data_only_loads(bytes(data)))
    except Exception as exc:
        return [task_id, "error", f"{_NOT_CARRIED}: {exc}"]
    return [task_id, fmt, orjson.Fragment(encoded)]


def _values(raw: Any, codec: ValueCodec) -> str | None:
    if raw is None:
        return None
    try:
        stored = data_only_loads(bytes(raw))
        entries = [_value(fields, codec) for fields in stored]
    except Exception as exc:  # the values of a batch that cannot be read: none of them kept
        return dumps({"unreadable": f"{type(exc).__name__}: {exc}"})
    return orjson.dumps(entries).decode()


def json_history(tx: Tx, backend: str) -> None:
    """Write every version-3 batch again as JSON, in order (see the module's note)."""
    p = _params(backend)
    page = (f"SELECT seq, run_id, worker, transitions, durations, task_values FROM batches_v3 "
            f"WHERE seq > {p('after')} ORDER BY seq LIMIT {_PAGE}")
    insert = load_queries(backend)["insert_batch"]
    codec = ValueCodec(pickle_values=False)
    after = 0
    while rows := tx.fetch(page, {"after": after}):
        for row in rows:
            tx.execute(insert, {"run_id": row["run_id"], "worker": row["worker"],
                                "transitions": _transitions(row["transitions"]),
                                "durations": _durations(row["durations"]),
                                "task_values": _values(row["task_values"], codec)})
        after = rows[-1]["seq"]
    tx.execute("DROP TABLE batches_v3")


# version -> step(transaction, backend)
PYTHON_STEPS: dict[int, Callable[[Tx, str], None]] = {2: pack_v1_history, 4: json_history}
