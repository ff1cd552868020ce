"""The SQL stores' manager: every storage operation, records mapped to rows and back.

Three layers, as in procrastinate (App → JobManager → Connector)::

    StoreRecorder / CLI / resume ──> SQLStore ──named query + params──> Connector ──> driver
    (through the Store protocol)     (this module)                      (_connector.py,
                                                                         sqlite.py, postgres.py)

:class:`SQLStore` picks the named query (``sql/<backend>/queries.sql``), maps records to rows
(:mod:`~corral.store._records`), encodes history and values (:mod:`~corral.store._codec`:
JSON, and signed pickles only where the store opted in), runs the migrations, and makes every
state change one transaction.

What is stored: ``runs`` (one row per run: params, pipeline source, status, lease and its
owner's process), ``dags`` (each distinct DAG's snapshot once), ``batches`` (the history,
append-only: one row per group commit with that commit's transitions, the durations of the
attempts that succeeded in it and the values of the tasks that did) and ``events`` (the
run-level event log, append-only).

Why one row per commit and not a row per transition: on SQLite a row costs 10-30 µs to insert
(``python -m bench.store_rows``) and a task makes three transitions and a value. Read the
history with :meth:`SQLStore.load_run` (or ``corral show RUN_ID --json``), not with SQL.

Every read maps a row it cannot read (bad JSON, wrong types, a pickle where JSON belongs) to
:class:`~corral._errors.CorruptHistory` naming the run: a store written by something else is
reported, never trusted and never executed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import orjson

from corral._errors import BrokenStore, CorruptHistory, RunLocked, RunNotFound, StoreTooNew
from corral._spec import TaskState
from corral.store import _owner
from corral.store._codec import NotData, ValueCodec, dumps, loads
from corral.store._connector import Connector, PoolStats, Tx, load_queries, migrations
from corral.store._records import (
    MISSING,
    EventRecord,
    RunRecord,
    StoredRun,
    StoredStatus,
    StoredTask,
    TaskSnapshot,
    TransitionRecord,
    json_column,
    snapshot_json,
)

__all__ = ["DEFAULT_VALUE_LIMIT", "DURATION_SAMPLES", "SQLStore", "batch_row", "open_sql_store"]

# Values encoded to more than this are written to a file and referenced by path: large
# blobs bloat SQLite pages and PostgreSQL TOAST, and are rarely read back.
DEFAULT_VALUE_LIMIT = 1024 * 1024

# A task's duration estimate is the median of its successful attempts in this many of its
# pipeline's latest runs.
DURATION_SAMPLES = 50

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

# What reading a malformed row raises, before it becomes CorruptHistory.
_MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError)


def batch_row(run_id: str, worker: str | None, entries: Sequence[Sequence[Any]],
              values: str | None) -> dict[str, Any]:
    """The ``batches`` row of one group commit: packed transitions, the durations of the
    attempts that succeeded in it (what estimates read) and its encoded values."""
    durations = {e[0]: e[4] for e in entries
                 if len(e) > 4 and e[4] is not None and e[1] == "succeeded"}
    return {"run_id": run_id, "worker": worker, "transitions": dumps(entries),
            "durations": dumps(durations) if durations else None, "task_values": values}


@contextmanager
def _reading(url: str, run_id: str | None, what: str) -> Iterator[None]:
    """Turn what a malformed row makes the mapping code raise into CorruptHistory."""
    try:
        yield
    except CorruptHistory:
        raise
    except _MALFORMED as exc:
        raise CorruptHistory(f"{what} cannot be read: {type(exc).__name__}: {exc}",
                             run_id=run_id or "?", task=None, url=url) from exc


class SQLStore:
    """The run store on SQL (SQLite or PostgreSQL); implements :class:`~corral.store.Store`.
    Open one with :func:`corral.store.open_store`.

    ``values`` encodes task values (JSON; signed pickles with ``pickle_values``); values
    larger than ``value_limit`` bytes go to files under ``values_dir``. ``is_gone`` tells
    whether a lease owner's process is gone (:func:`corral.store._owner.is_gone`; a seam for
    tests).
    """

    def __init__(
        self,
        connector: Connector,
        *,
        values_dir: str | Path,
        value_limit: int = DEFAULT_VALUE_LIMIT,
        values: ValueCodec | None = None,
        is_gone: Callable[[str | None], bool] = _owner.is_gone,
    ) -> None:
        self.connector = connector
        self.values_dir = Path(values_dir)
        self.value_limit = value_limit
        self.values = values if values is not None else ValueCodec()
        self._is_gone = is_gone
        self._q = load_queries(connector.backend)

    @property
    def url(self) -> str:
        return self.connector.url

    def __repr__(self) -> str:
        return f"<SQLStore {self.url}>"

    def close(self) -> None:
        self.connector.close()

    def checkpoint(self) -> None:
        """See :meth:`Connector.checkpoint`."""
        self.connector.checkpoint()

    def pool_stats(self) -> PoolStats | None:
        """See :meth:`Connector.pool_stats` (not part of the :class:`Store` protocol: callers
        ask with ``getattr``, a third-party store may not say)."""
        return self.connector.pool_stats()

    def __enter__(self) -> SQLStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ schema
    @property
    def schema_version(self) -> int:
        """The version the code writes: the highest numbered migration."""
        return migrations(self.connector.backend)[-1][0]

    def migrate(self, target: int | None = None) -> int:
        """Bring the schema up to date (or up to version ``target``, for tests of the upgrade
        path); return its version. Raises :class:`StoreTooNew` when the store was written by a
        newer corral. Concurrent migrators serialise on a lock (:mod:`corral.store._schema`)."""
        from corral.store._migrations import PYTHON_STEPS
        from corral.store._schema import migrate_schema

        return migrate_schema(self.connector.transaction, self.connector.backend,
                              too_new=self._too_new, steps=PYTHON_STEPS, target=target)

    def _too_new(self, current: int, latest: int) -> StoreTooNew:
        return StoreTooNew(
            f"the store's schema is version {current}, but this corral knows only up to "
            f"version {latest}: upgrade corral to use it", url=self.url)

    # ------------------------------------------------------------------ writing (recorder)
    def begin_run(
        self,
        record: RunRecord,
        *,
        lease_s: float,
        resume_of: str | None = None,
        events: Sequence[EventRecord] = (),
    ) -> None:
        """Record a new run holding a lease of ``lease_s`` seconds, in one transaction.

        With ``resume_of``, first take that run over: it must be unfinished or failed, not
        already resumed, and its lease must no longer hold (lapsed, or its owner's process is
        gone), else :class:`RunLocked` (or :class:`RunNotFound`) is raised and nothing is
        written.
        """
        q = self._q
        with self.connector.transaction(write=True) as tx:
            if resume_of is not None:
                now = datetime.now(UTC)
                old = tx.fetch(q["get_run"], {"id": resume_of, "now": now})
                owner = old[0].get("owner_process") if old else None
                # Decided outside SQL, but race-free: an identity names one process for ever,
                # and a process that is gone stays gone (see corral.store._owner).
                gone = owner if owner and self._is_gone(owner) else None
                claimed = tx.fetch(q["claim_run"], {"old_id": resume_of, "new_id": record.id,
                                                    "now": now, "gone_owner": gone})
                if not claimed:
                    raise self._why_not_claimable(tx, resume_of)
                tx.execute(q["insert_event"], EventRecord(
                    "resumed", now, data={"by": record.id}).to_row(resume_of))
            row = record.to_row(lease_s=lease_s)
            if not tx.fetch(q["dag_known"], {"hash": row["dag_hash"]})[0]["n"]:
                tx.execute(q["insert_dag"], {"hash": row["dag_hash"],
                                             "tasks": (record.tasks_json or snapshot_json(
                                                 record.tasks)).decode()})
            tx.execute(q["insert_run"], {**row, "now": datetime.now(UTC)})
            if events:
                tx.executemany(q["insert_event"], [e.to_row(record.id) for e in events])

    def _why_not_claimable(self, tx: Tx, run_id: str) -> Exception:
        rows = tx.fetch(self._q["get_run"], {"id": run_id, "now": datetime.now(UTC)})
        if not rows:
            return RunNotFound(f"no run {run_id!r} in the store {self.url}")
        run = self._records(tx, rows)[0]
        if run.resumed_by is not None:
            return RunLocked(run_id, owner=f"run {run.resumed_by} (it resumed this run)",
                             lease_until=None)
        if run.status is StoredStatus.SUCCEEDED:
            return RunNotFound(f"run {run_id!r} succeeded: there is nothing to resume")
        return RunLocked(run_id, owner=run.lease_owner, lease_until=run.lease_until)

    def write(
        self,
        run_id: str,
        *,
        transitions: Sequence[Sequence[Any]] | Sequence[TransitionRecord] = (),
        values: Sequence[tuple[str, Any]] = (),
        events: Sequence[EventRecord] = (),
        lease: tuple[str, float] | None = None,
        finish: tuple[StoredStatus, datetime] | None = None,
        worker: str | None = None,
    ) -> None:
        """Append a batch of history in one transaction (group commit).

        ``transitions`` are records, or packed entries (:data:`PACKED_FIELDS`; what the
        recorder passes, as it is cheaper), by ``worker`` unless one names its own;
        ``values`` are ``(task_id, value)`` pairs, encoded here (outside the transaction);
        ``lease`` is ``(owner, seconds)`` to extend the run's lease; ``finish`` ends the run.
        """
        q = self._q
        batch = None
        if transitions or values:
            entries: Sequence[Sequence[Any]]
            if transitions and isinstance(transitions[0], TransitionRecord):
                entries = [t.packed() for t in cast(Sequence[TransitionRecord], transitions)]
            else:
                entries = cast(Sequence[Sequence[Any]], transitions)
            batch = batch_row(run_id, worker, entries,
                              self._encode(run_id, values) if values else None)
        with self.connector.transaction(write=True) as tx:
            if batch is not None:
                tx.execute(q["insert_batch"], batch)
            if events:
                tx.executemany(q["insert_event"], [e.to_row(run_id) for e in events])
            if finish is not None:
                status, finished_at = finish
                tx.execute(q["finish_run"], {"id": run_id, "status": str(status),
                                             "finished_at": finished_at})
            elif lease is not None:
                owner, seconds = lease
                tx.execute(q["renew_lease"], {"id": run_id, "owner": owner, "lease_s": seconds,
                                            "now": datetime.now(UTC)})

    def _encode(self, run_id: str, values: Sequence[tuple[str, Any]]) -> str:
        """``values`` as the JSON of a batch's ``task_values`` (see :mod:`_codec`)."""
        codec, limit = self.values, self.value_limit
        out: list[list[Any]] = []
        for task_id, value in values:
            if value is None:  # what most tasks return: no call for it
                out.append([task_id, "json", None])
                continue
            try:
                fmt, data = codec.encode(value)
            except NotData as exc:  # not data, and no pickles: the task re-runs on resume
                out.append([task_id, "error", str(exc)])
                continue
            except Exception as exc:  # could not be pickled: the same
                out.append([task_id, "error",
                            f"could not pickle the value: {type(exc).__name__}: {exc}"])
                continue
            if len(data) > limit:
                path = self._write_value_file(run_id, task_id, data, fmt)
                digest = (codec.sign(run_id, task_id, data) if fmt == "pickle"
                          else hashlib.sha256(data).hexdigest())
                out.append([task_id, "file", fmt, path, len(data), digest])
            elif fmt == "pickle":
                out.append([task_id, "pickle", base64.b64encode(data).decode(),
                            codec.sign(run_id, task_id, data)])
            else:
                out.append([task_id, fmt, orjson.Fragment(data)])
        try:
            return orjson.dumps(out).decode()
        except TypeError:  # a lone surrogate in a task id or message: escape them
            return dumps([[loads(e.contents) if isinstance(e, orjson.Fragment) else e
                           for e in entry] for entry in out])

    def _write_value_file(self, run_id: str, task_id: str, data: bytes, fmt: str) -> str:
        digest = hashlib.sha256(task_id.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        suffix = ".pkl" if fmt == "pickle" else ".json"
        path = self._run_dir(run_id) / f"{_SAFE.sub('_', task_id)}-{digest}{suffix}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)  # readers never see half a file
        except OSError as exc:
            raise BrokenStore(f"could not write the value of task {task_id!r} to {path}: {exc}",
                              url=self.url) from exc
        return str(path)

    def _run_dir(self, run_id: str) -> Path:
        """Where the values of run ``run_id`` too large to store inline go."""
        name = _SAFE.sub("_", run_id).strip(".") or "_"
        return self.values_dir / name

    def _decode(self, run_id: str, entry: list[Any]) -> tuple[Any, str | None]:
        """A value entry's value (or MISSING) and why it could not be read."""
        task_id, kind = entry[0], entry[1]
        if kind == "error":
            return MISSING, str(entry[2]) if len(entry) > 2 else "unknown"
        codec = self.values
        try:
            if kind in ("json", "tagged"):
                return codec.decode(kind, entry[2], run_id=run_id, task_id=task_id), None
            if kind == "pickle":
                data = base64.b64decode(entry[2], validate=True)
                return codec.decode("pickle", data, run_id=run_id, task_id=task_id,
                                    signature=entry[3]), None
            if kind == "file":
                fmt, path, _size, digest = entry[2:6]
                data = Path(path).read_bytes()
                if fmt != "pickle" and hashlib.sha256(data).hexdigest() != digest:
                    raise ValueError(f"the file {path} changed since it was stored")
                return codec.decode(fmt, data, run_id=run_id, task_id=task_id,
                                    signature=digest), None
            raise ValueError(f"an unknown value entry {kind!r}")
        except Exception as exc:  # gone, tampered or unreadable (a class that moved): re-run
            return MISSING, f"could not read the stored value: {exc}"

    # ------------------------------------------------------------------ reading (callers)
    def get_run(self, run_id: str) -> RunRecord:
        """The record of run ``run_id``; :class:`RunNotFound` if there is none."""
        with self.connector.transaction(write=False) as tx:
            rows = tx.fetch(self._q["get_run"], {"id": run_id, "now": datetime.now(UTC)})
            if not rows:
                raise RunNotFound(f"no run {run_id!r} in the store {self.url}")
            return self._records(tx, rows)[0]

    def _records(self, tx: Tx, rows: Sequence[Mapping[str, Any]]) -> list[RunRecord]:
        """``runs`` rows as records, with their DAGs (each distinct one read and parsed once);
        a lease whose owner is gone does not hold."""
        hashes = sorted({r["dag_hash"] for r in rows})
        dags: dict[str, tuple[TaskSnapshot, ...]] = {}
        for d in tx.fetch(self._q["get_dags"], {"hashes": hashes}) if hashes else ():
            users = [r["id"] for r in rows if r["dag_hash"] == d["hash"]]
            with _reading(self.url, users[0] if users else None, "the run's DAG snapshot"):
                dags[d["hash"]] = tuple(TaskSnapshot.from_json(t)
                                        for t in json_column(d["tasks"]))
        records = []
        for r in rows:
            with _reading(self.url, r.get("id"), "the run's record"):
                record = RunRecord.from_row(r, dags.get(r["dag_hash"], ()))
            if record.lease_live and self._is_gone(record.owner_process):
                record = record.evolve(lease_live=False)
            records.append(record)
        return records

    def load_run(self, run_id: str) -> StoredRun:
        """A run with its history checked against the state machine (else
        :class:`~corral._errors.CorruptHistory`), each task's last state and stored value."""
        from corral.store._history import check_history

        q = self._q
        params = {"id": run_id, "now": datetime.now(UTC)}
        with self.connector.transaction(write=False) as tx:
            rows = tx.fetch(q["get_run"], params)
            if not rows:
                raise RunNotFound(f"no run {run_id!r} in the store {self.url}")
            run = self._records(tx, rows)[0]
            batches = tx.fetch(q["run_batches"], params)
            events = tx.fetch(q["run_events"], {"id": run_id})
        run = _with_added_tasks(self.url, run, events)
        context = _context_of(self.url, run.id, events)
        executor_of = {t.id: t.executor for t in run.tasks}
        transitions: list[TransitionRecord] = []
        values: dict[str, list[Any]] = {}
        for batch in batches:
            with _reading(self.url, run_id, f"batch {batch['seq']} of its history"):
                entries = loads(batch["transitions"])
                if type(entries) is not list:
                    raise ValueError(_unreadable(entries))
                for entry in entries:
                    transitions.append(TransitionRecord.from_packed(
                        entry, started_at=run.started_at, executor=executor_of.get(entry[0]),
                        worker=batch["worker"], seq=len(transitions) + 1,
                        log_dir=run.log_dir))
                if batch["task_values"] is not None:
                    stored = loads(batch["task_values"])
                    if type(stored) is not list:
                        raise ValueError(f"its values: {_unreadable(stored)}")
                    for entry in stored:
                        if type(entry) is not list or len(entry) < 2 or type(entry[0]) is not str:
                            raise ValueError("a value entry is not [task, format, ...]")
                        values[entry[0]] = entry
        outcomes = check_history(run, transitions, url=self.url)
        tasks: dict[str, StoredTask] = {}
        for snap in run.tasks:
            state, attempts, error = outcomes.get(snap.id, (None, 0, None))
            value: Any = MISSING
            value_error = None
            if state is TaskState.SUCCEEDED:
                found = values.get(snap.id)
                if found is None:
                    value_error = "no value was stored"
                else:
                    value, value_error = self._decode(run_id, found)
            tasks[snap.id] = StoredTask(snap.id, snap.fingerprint, snap.deps, state, attempts,
                                        value, value_error, error)
        return StoredRun(run, tasks, tuple(transitions), context)

    def events(self, run_id: str) -> list[EventRecord]:
        """The run's event log, oldest first."""
        with self.connector.transaction(write=False) as tx:
            rows = tx.fetch(self._q["run_events"], {"id": run_id})
        with _reading(self.url, run_id, "its event log"):
            return [EventRecord.from_row(r) for r in rows]

    def latest_unfinished(self, pipeline: str) -> RunRecord | None:
        """The newest run of ``pipeline`` that did not succeed and was not resumed yet.

        It may still be live elsewhere (``lease_live``): resuming it then raises RunLocked.
        """
        with self.connector.transaction(write=False) as tx:
            rows = tx.fetch(self._q["latest_unfinished"],
                            {"pipeline": pipeline, "now": datetime.now(UTC)})
            return self._records(tx, rows)[0] if rows else None

    def list_runs(
        self,
        *,
        status: StoredStatus | str | None = None,
        pipeline: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Runs, newest first, optionally of one status (as :attr:`RunRecord.observed_status`:
        ``running`` holds a live lease, ``crashed`` includes runs whose lease no longer holds)
        or pipeline."""
        wanted = StoredStatus(status) if status is not None else None
        # SQL cannot tell a gone owner: for running and crashed it returns candidates, which
        # are filtered here, fetching more until ``limit`` are found or there are no more.
        filtered = wanted in (StoredStatus.RUNNING, StoredStatus.CRASHED)
        fetch = limit
        while True:
            with self.connector.transaction(write=False) as tx:
                rows = tx.fetch(self._q["list_runs"], {
                    "status": str(wanted) if wanted is not None else None,
                    "pipeline": pipeline, "limit": fetch, "now": datetime.now(UTC)})
                records = self._records(tx, rows)
            if not filtered:
                return records
            found = [r for r in records if r.observed_status is wanted]
            if len(found) >= limit or len(rows) < fetch:
                return found[:limit]
            fetch *= 4

    def task_durations(self, pipeline: str, task_ids: Sequence[str]) -> dict[str, float]:
        """Per task, the median duration (s) of its successful attempts in the latest
        :data:`DURATION_SAMPLES` runs of ``pipeline``; tasks with none are left out. For plan
        estimates."""
        if not task_ids:
            return {}
        wanted = set(task_ids)
        with self.connector.transaction(write=False) as tx:
            rows = tx.fetch(self._q["recent_durations"],
                            {"pipeline": pipeline, "runs": DURATION_SAMPLES})
        samples: dict[str, list[float]] = {}
        for row in rows:
            with _reading(self.url, row["run_id"], "the durations of its history"):
                durations = loads(row["durations"])
                if type(durations) is not dict:
                    raise ValueError(_unreadable(durations))
                for task_id, seconds in durations.items():
                    if type(seconds) is not float and type(seconds) is not int:
                        raise ValueError(f"the duration of task {task_id!r} is not a number")
                    if task_id in wanted:
                        samples.setdefault(task_id, []).append(float(seconds))
        return {t: statistics.median(d) for t, d in samples.items()}

    def prune(self, older_than: timedelta | float) -> list[str]:
        """Delete runs that ended (or, crashed, started) more than ``older_than`` ago, with
        their history and value files; runs holding a live lease are kept. Returns their ids."""
        if not isinstance(older_than, timedelta):
            older_than = timedelta(seconds=older_than)
        now = datetime.now(UTC)
        params = {"cutoff": now - older_than, "now": now}
        with self.connector.transaction(write=True) as tx:
            pruned = [r["id"] for r in tx.fetch(self._q["prune_runs"], params)]
            if pruned:
                tx.execute(self._q["prune_dags"])
        for run_id in pruned:  # after the commit: a rolled-back prune keeps its files
            shutil.rmtree(self._run_dir(run_id), ignore_errors=True)
        return pruned


def _unreadable(found: Any) -> str:
    """Why a history field that should be a list (or dict) is not."""
    if isinstance(found, dict) and "unreadable" in found:  # left by the schema 4 migration
        return f"it could not be carried over to schema version 4: {found['unreadable']}"
    return f"it is a {type(found).__name__}, not a list"


def open_sql_store(
    connector: Connector,
    *,
    default_values_dir: Path,
    value_limit: int | None = None,
    values_dir: str | Path | None = None,
    migrate: bool = True,
    pickle_values: bool = False,
    key: bytes | str | None = None,
    **_ignored: Any,
) -> SQLStore:
    """A :class:`SQLStore` on ``connector`` with :class:`~corral.store.StoreOptions` (closed
    again if its migration fails): what the SQLite and PostgreSQL backends share."""
    store = SQLStore(
        connector,
        values_dir=Path(values_dir) if values_dir is not None else default_values_dir,
        value_limit=DEFAULT_VALUE_LIMIT if value_limit is None else value_limit,
        values=ValueCodec(pickle_values=pickle_values, key=key),
    )
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store


def _with_added_tasks(url: str, run: RunRecord, events: Sequence[Mapping[str, Any]]) -> RunRecord:
    """``run`` with the tasks it added while it ran (a ``for_each`` fan-out: its
    ``tasks_added`` events) after those of its DAG snapshot."""
    added: list[TaskSnapshot] = []
    for row in events:
        if row["kind"] != "tasks_added":
            continue
        with _reading(url, run.id, "its added tasks"):
            data = EventRecord.from_row(row).data
            added += [TaskSnapshot.from_json(t) for t in data.get("tasks", ())]
    return run.evolve(tasks=(*run.tasks, *added)) if added else run


def _context_of(url: str, run_id: str, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's context (corral.context()): its ``context`` events, folded in order."""
    context: dict[str, Any] = {}
    for row in events:
        if row["kind"] != "context":
            continue
        with _reading(url, run_id, "its context"):
            data = EventRecord.from_row(row).data
            context.update(data.get("set") or {})
            for key in data.get("deleted") or ():
                context.pop(key, None)
    return context

