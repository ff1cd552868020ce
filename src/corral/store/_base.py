"""The run store's contract: records, the connector interface, and :class:`Store`.

Three layers, as in procrastinate (App → JobManager → Connector)::

    StoreRecorder / CLI / resume ──> Store ──named query + params──> Connector ──> sqlite3 | psycopg
                                     (manager)                       (executes, wraps errors)

:class:`Store` owns every storage operation: it picks the named query (``sql/<backend>/
queries.sql``), maps records to rows and back, runs the migrations, serialises task values,
and makes every state change one transaction. A :class:`Connector` only executes: it opens
transactions, adapts parameters to its driver and turns driver exceptions into
:class:`~corral._errors.BrokenStore` naming the store's URL (original as ``__cause__``).

What is stored (see ``sql/<backend>/``): ``runs`` (one row per run: DAG snapshot, params,
pipeline source, status, lease), ``batches`` (the history, append-only: one row per group
commit, holding that commit's task transitions, the durations of the attempts that succeeded
in it, and the values of the tasks that did, each pickled) and ``events`` (the run-level event
log, append-only).

Why one pickled row per commit and not a row per transition: on SQLite a row costs 10-30 µs to
insert (``python -m bench.store_rows``) and a task makes three transitions and a value, which
made a recorded run 8x slower than an in-memory one; and pickling a commit's transitions is
six times faster than writing them as JSON. Read the history with :meth:`Store.load_run` (or
``corral show RUN_ID --json``), not with SQL.
"""

from __future__ import annotations

import abc
import enum
import hashlib
import json
import os
import pickle
import re
import shutil
import statistics
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Final, NamedTuple, Protocol, cast

from corral._errors import BrokenStore, RunLocked, RunNotFound, StoreTooNew
from corral._spec import TaskState

__all__ = [
    "DEFAULT_VALUE_LIMIT",
    "MISSING",
    "Connector",
    "EventRecord",
    "RunRecord",
    "Store",
    "StoredRun",
    "StoredStatus",
    "StoredTask",
    "StoredValue",
    "TaskSnapshot",
    "TransitionRecord",
    "Tx",
]

# Values pickled to more than this are written to a file and referenced by path: large
# blobs bloat SQLite pages and PostgreSQL TOAST, and are rarely read back.
DEFAULT_VALUE_LIMIT = 1024 * 1024

# A task's duration estimate is the median of its successful attempts in this many of its
# pipeline's latest runs.
DURATION_SAMPLES = 50

# The fields of one transition as packed in a batch, in order; trailing ``None``s are left out.
# ``worker`` is left out too when it is the batch's own.
PACKED_FIELDS: Final = ("task_id", "state", "attempt", "clock", "duration_s", "error",
                        "traceback", "exit_code", "log_path", "worker")
_NO_FIELDS: Final = (None,) * len(PACKED_FIELDS)


def packed_entry(*fields: Any) -> list[Any]:
    """A transition as a batch stores it: :data:`PACKED_FIELDS`, trailing ``None``s left out
    (the recorder's hot path writes the common short entries inline)."""
    entry = list(fields)
    while entry and entry[-1] is None:
        entry.pop()
    return entry


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing.MISSING
"""The stored value of a task that has none (it did not succeed, or its value was lost)."""


class StoredStatus(enum.StrEnum):
    """How a stored run stands."""

    RUNNING = "running"  # started and not ended: live while its lease is, else crashed
    SUCCEEDED = "succeeded"  # ended, every task succeeded
    FAILED = "failed"  # ended with a failure
    INTERRUPTED = "interrupted"  # stopped by a signal or cancel()
    CRASHED = "crashed"  # never recorded its end; a resume took it over


# ---------------------------------------------------------------------------- records


def _dt(value: Any) -> datetime | None:
    """A row's timestamp (a datetime from PostgreSQL, epoch seconds from SQLite) as UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


def json_column(value: Any) -> Any:
    """A JSON column's value: parsed by psycopg already (json, jsonb), text from SQLite."""
    return json.loads(value) if isinstance(value, str | bytes) else value


class TaskSnapshot(NamedTuple):
    """One task as it was defined when the run started."""

    id: str
    deps: tuple[str, ...]
    fingerprint: str
    executor: str

    # Stored as JSON ``[id, deps, fingerprint, executor]`` (json.dumps writes the tuple so):
    # twice as fast to encode as an object, and a run stores one per task before it starts.

    @classmethod
    def from_json(cls, data: Sequence[Any] | Mapping[str, Any]) -> TaskSnapshot:
        if isinstance(data, Mapping):  # as schema version 1 stored it
            return cls(data["id"], tuple(data["deps"]), data["fingerprint"], data["executor"])
        task_id, deps, fingerprint, executor = data
        return cls(task_id, tuple(deps), fingerprint, executor)


def dag_hash(tasks: Sequence[TaskSnapshot]) -> str:
    """A hash of a DAG's shape and definitions: equal hashes, same tasks, deps and code (a
    task's fingerprint covers its dependencies)."""
    payload = "\n".join(sorted(f"{t.id}\t{t.fingerprint}" for t in tasks))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One stored run (without its history)."""

    id: str
    pipeline: str
    status: StoredStatus
    tasks: tuple[TaskSnapshot, ...]
    params: Mapping[str, str]
    started_at: datetime
    host: str
    user: str
    pid: int
    dag_hash: str = ""
    source_path: str | None = None
    source_text: str | None = None
    reused: tuple[str, ...] = ()
    resumed_from: str | None = None
    resumed_by: str | None = None
    finished_at: datetime | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    lease_live: bool = False

    @classmethod
    def from_row(cls, row: Mapping[str, Any], tasks: tuple[TaskSnapshot, ...]) -> RunRecord:
        """The record of a ``runs`` row whose DAG (the ``dags`` row) is ``tasks``."""
        started = _dt(row["started_at"])
        assert started is not None
        return cls(
            id=row["id"],
            pipeline=row["pipeline"],
            status=StoredStatus(row["status"]),
            tasks=tasks,
            params=json_column(row["params"]),
            started_at=started,
            host=row["host"],
            user=row["user_name"],
            pid=row["pid"],
            dag_hash=row["dag_hash"],
            source_path=row["source_path"],
            source_text=row["source_text"],
            reused=tuple(json_column(row["reused"])),
            resumed_from=row["resumed_from"],
            resumed_by=row["resumed_by"],
            finished_at=_dt(row["finished_at"]),
            lease_owner=row["lease_owner"],
            lease_until=_dt(row["lease_until"]),
            lease_live=bool(row.get("lease_live")),
        )

    def to_row(self, *, lease_s: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "dag_hash": self.dag_hash or dag_hash(self.tasks),
            "params": json.dumps(dict(self.params)),
            "source_path": self.source_path,
            "source_text": self.source_text,
            "reused": json.dumps(list(self.reused)),
            "resumed_from": self.resumed_from,
            "started_at": self.started_at,
            "host": self.host,
            "user_name": self.user,
            "pid": self.pid,
            "lease_owner": self.lease_owner,
            "lease_s": lease_s,
        }

    def evolve(self, **changes: Any) -> RunRecord:
        return replace(self, **changes)

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def is_finished(self) -> bool:
        return self.finished_at is not None

    @property
    def observed_status(self) -> StoredStatus:
        """The status as seen now: a run still marked running whose lease has lapsed died
        without recording its end, so it is shown (and filtered) as crashed."""
        if self.status is StoredStatus.RUNNING and not self.lease_live:
            return StoredStatus.CRASHED
        return self.status


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """Task ``task_id`` entered ``state`` (attempt ``attempt``) at ``at``.

    ``clock`` is the same instant on the run's own clock (seconds from its start).
    ``duration_s`` is set on the transition that ends an attempt; ``error``, ``traceback`` and
    ``exit_code`` on failures; ``log_path`` on the start of an attempt that writes a log.
    ``seq`` is its position in the run's history, from 1.
    """

    task_id: str
    state: TaskState
    attempt: int
    at: datetime
    clock: float
    duration_s: float | None = None
    error: str | None = None
    traceback: str | None = None
    exit_code: int | None = None
    executor: str | None = None
    worker: str | None = None
    log_path: str | None = None
    seq: int | None = None

    @classmethod
    def from_packed(
        cls,
        entry: Sequence[Any],
        *,
        started_at: datetime,
        executor: str | None,
        worker: str | None,
        seq: int,
    ) -> TransitionRecord:
        """One transition of a batch (see :data:`PACKED_FIELDS`); ``at`` is ``started_at``
        plus its clock, ``worker`` the batch's unless the entry names its own."""
        fields: list[Any] = [*entry, *_NO_FIELDS[len(entry):]]
        task_id, state, attempt, clock, duration, error, tb, exit_code, log_path, own_worker = (
            fields)
        return cls(
            task_id=task_id, state=TaskState(state), attempt=attempt,
            at=started_at + timedelta(seconds=clock), clock=clock, duration_s=duration,
            error=error, traceback=tb, exit_code=exit_code, executor=executor,
            worker=own_worker if own_worker is not None else worker, log_path=log_path, seq=seq,
        )

    def packed(self) -> list[Any]:
        """This transition as a batch stores it (``at`` and ``executor`` are not stored: they
        follow from the run's start and its DAG snapshot)."""
        return packed_entry(self.task_id, str(self.state), self.attempt, self.clock,
                            self.duration_s, self.error, self.traceback, self.exit_code,
                            self.log_path, self.worker)

    def describe(self) -> str:
        return f"#{self.seq} {self.state} (attempt {self.attempt}, at {self.at.isoformat()})"


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One entry of a run's event log (``run_started``, ``run_resumed``, ``run_finished``...)."""

    kind: str
    at: datetime
    task_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    seq: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EventRecord:
        at = _dt(row["at"])
        assert at is not None
        return cls(row["kind"], at, row["task_id"], json_column(row["data"]), row["seq"])

    def to_row(self, run_id: str) -> dict[str, Any]:
        return {"run_id": run_id, "at": self.at, "kind": self.kind, "task_id": self.task_id,
                "data": json.dumps(dict(self.data), default=str)}


@dataclass(frozen=True, slots=True)
class StoredTask:
    """One task of a stored run: its definition then, where it got to, and its value.

    ``state`` is the last state recorded (``None``: it never left pending). ``value`` is
    :data:`MISSING` unless the task succeeded and its value could be stored and read back;
    ``value_error`` says why not when it could not.
    """

    id: str
    fingerprint: str
    deps: tuple[str, ...]
    state: TaskState | None
    attempts: int
    value: Any = MISSING
    value_error: str | None = None
    error: str | None = None


class StoredValue(NamedTuple):
    """A task's value as a batch stores it: inline ``data``, or the ``path`` of the file
    holding it, or the ``error`` that kept it from being stored."""

    task_id: str
    codec: str
    size: int
    data: bytes | None
    path: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class StoredRun:
    """A run as loaded for resume or display: its record, each task, and its full history."""

    run: RunRecord
    tasks: Mapping[str, StoredTask]
    transitions: tuple[TransitionRecord, ...]

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def params(self) -> Mapping[str, str]:
        return self.run.params


def batch_row(
    run_id: str, worker: str | None, entries: Sequence[Sequence[Any]], values: Sequence[Any]
) -> dict[str, Any]:
    """The ``batches`` row of one group commit: packed transitions, the durations of the
    attempts that succeeded in it (what estimates read) and its serialised values (each a
    :class:`StoredValue` as a plain tuple)."""
    durations = {e[0]: e[4] for e in entries
                 if len(e) > 4 and e[4] is not None and e[1] == "succeeded"}
    return {
        "run_id": run_id, "worker": worker,
        "transitions": pickle.dumps(entries, pickle.HIGHEST_PROTOCOL),
        "durations": pickle.dumps(durations, pickle.HIGHEST_PROTOCOL) if durations else None,
        "task_values": pickle.dumps(values, pickle.HIGHEST_PROTOCOL) if values else None,
    }


# ---------------------------------------------------------------------------- connectors


class Tx(Protocol):
    """One open transaction. Parameters are a mapping, named in the backend's query style."""

    def fetch(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]: ...

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int: ...

    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def script(self, sql: str) -> None: ...


class Connector(abc.ABC):
    """Executes; knows nothing of runs. For implementers: a transaction either commits whole
    or raises, and every driver error leaves as :class:`BrokenStore` naming :attr:`url`."""

    backend: ClassVar[str]

    def __init__(self, url: str) -> None:
        self.url = redact(url)

    @abc.abstractmethod
    def transaction(self, *, write: bool = True) -> AbstractContextManager[Tx]: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def checkpoint(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Fold the write-ahead log into the database, where the backend leaves that to its
        clients (SQLite). Called by the recorder between commits, off the run's path. Does
        nothing by default: PostgreSQL checkpoints by itself."""

    def broken(self, exc: BaseException, doing: str) -> BrokenStore:
        return BrokenStore(f"could not {doing}: {exc}", url=self.url)


def redact(url: str) -> str:
    """``url`` with any password masked, fit for error messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_sql(backend: str, name: str) -> str:
    return resources.files("corral.store").joinpath("sql", backend, name).read_text("utf-8")


def load_queries(backend: str) -> dict[str, str]:
    """The named queries of ``sql/<backend>/queries.sql``: ``-- name: x`` starts query x."""
    text = load_sql(backend, "queries.sql")
    parts = _NAME.split(text)
    return {parts[k]: parts[k + 1].strip() for k in range(1, len(parts), 2)}


def migrations(backend: str) -> list[tuple[int, str]]:
    """``(version, sql)`` of every numbered migration (``0001_init.sql``...), in order."""
    folder = resources.files("corral.store").joinpath("sql", backend)
    out = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_\w+\.sql", entry.name)
        if match:
            out.append((int(match.group(1)), entry.read_text("utf-8")))
    return sorted(out)


# ---------------------------------------------------------------------------- the manager


Dumps = Callable[[Any], bytes]
Loads = Callable[[bytes], Any]


def _default_dumps(value: Any) -> bytes:
    """Plain pickle when it can (ten times faster per small value), cloudpickle when it
    cannot: lambdas, local classes, and anything of ``__main__``, which plain pickle stores by
    a reference that a resuming process could not follow."""
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        if b"__main__" not in data:
            return data
    except Exception:  # cloudpickle gets its chance below, and raises if it fails too
        pass
    import cloudpickle  # only loaded once a value needs it

    pickled: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return pickled


_PICKLED_NONE = pickle.dumps(None, protocol=pickle.HIGHEST_PROTOCOL)

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class Store:
    """The run store. Open one with :func:`corral.store.open_store`.

    For callers: :meth:`get_run`, :meth:`load_run`, :meth:`latest_unfinished`,
    :meth:`list_runs`, :meth:`events`, :meth:`task_durations`, :meth:`prune`, :meth:`close`.
    For the recorder (and tests): :meth:`begin_run`, :meth:`write`.

    ``dumps``/``loads`` serialise task values (cloudpickle/pickle by default); values larger
    than ``value_limit`` bytes go to files under ``values_dir``.
    """

    def __init__(
        self,
        connector: Connector,
        *,
        values_dir: str | Path,
        value_limit: int = DEFAULT_VALUE_LIMIT,
        dumps: Dumps = _default_dumps,
        loads: Loads = pickle.loads,
        codec: str = "cloudpickle",
    ) -> None:
        self.connector = connector
        self.values_dir = Path(values_dir)
        self.value_limit = value_limit
        self._dumps = dumps
        self._loads = loads
        self._codec = codec
        self._q = load_queries(connector.backend)

    @property
    def url(self) -> str:
        return self.connector.url

    def __repr__(self) -> str:
        return f"<Store {self.url}>"

    def close(self) -> None:
        self.connector.close()

    def checkpoint(self) -> None:
        """See :meth:`Connector.checkpoint`."""
        self.connector.checkpoint()

    def __enter__(self) -> Store:
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
        newer corral. Concurrent migrators serialise on a lock."""
        q = self._q
        latest = self.schema_version if target is None else target
        with self.connector.transaction(write=False) as tx:
            current = self._current_version(tx)
        if current == latest:
            return current
        with self.connector.transaction(write=True) as tx:
            tx.fetch(q["migration_lock"])
            tx.script(q["schema_version_create"])
            current = self._current_version(tx)  # re-read under the lock: another may have won
            self._check_not_newer(current, latest)
            from corral.store._migrations import PYTHON_STEPS

            for version, sql in migrations(self.connector.backend):
                if current < version <= latest:
                    tx.script(sql)
                    step = PYTHON_STEPS.get(version)
                    if step is not None:
                        step(tx, self.connector.backend)
                    tx.execute(q["schema_version_insert"],
                               {"version": version, "now": datetime.now(UTC)})
            return max(current, latest)

    def _current_version(self, tx: Tx) -> int:
        if not tx.fetch(self._q["schema_version_exists"])[0]["n"]:
            return 0
        current = int(tx.fetch(self._q["schema_version_current"])[0]["version"])
        self._check_not_newer(current, self.schema_version)
        return current

    def _check_not_newer(self, current: int, latest: int) -> None:
        if current > latest:
            raise StoreTooNew(
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
        already resumed, and its lease must have lapsed, else :class:`RunLocked` (or
        :class:`RunNotFound`) is raised and nothing is written.
        """
        q = self._q
        with self.connector.transaction(write=True) as tx:
            if resume_of is not None:
                claimed = tx.fetch(q["claim_run"], {"old_id": resume_of, "new_id": record.id,
                                                    "now": datetime.now(UTC)})
                if not claimed:
                    raise self._why_not_claimable(tx, resume_of)
                tx.execute(q["insert_event"], EventRecord(
                    "resumed", datetime.now(UTC), data={"by": record.id}).to_row(resume_of))
            row = record.to_row(lease_s=lease_s)
            if not tx.fetch(q["dag_known"], {"hash": row["dag_hash"]})[0]["n"]:
                # Snapshots are named tuples: json writes each [id, deps, fingerprint, executor]
                tx.execute(q["insert_dag"], {"hash": row["dag_hash"],
                                             "tasks": json.dumps(record.tasks)})
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
        ``values`` are ``(task_id, value)`` pairs, serialised here (outside the transaction);
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
            batch = batch_row(run_id, worker, entries, self._encode(run_id, values))
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
                tx.execute(q["heartbeat"], {"id": run_id, "owner": owner, "lease_s": seconds,
                                            "now": datetime.now(UTC)})

    def _encode(self, run_id: str, values: Sequence[tuple[str, Any]]) -> list[tuple[Any, ...]]:
        """``values`` serialised, as :class:`StoredValue` fields in plain tuples (a tenth of
        the cost per small value, and a commit may carry thousands)."""
        dumps, codec, limit = self._dumps, self._codec, self.value_limit
        none = _PICKLED_NONE if dumps is _default_dumps else None
        out: list[tuple[Any, ...]] = []
        for task_id, value in values:
            if value is None and none is not None:  # what most tasks return: no call for it
                out.append((task_id, codec, len(none), none, None, None))
                continue
            try:
                data = dumps(value)
            except Exception as exc:  # an unpicklable value: the task re-runs on resume
                out.append((task_id, codec, 0, None, None,
                            f"could not serialise the value: {type(exc).__name__}: {exc}"))
                continue
            if len(data) <= limit:
                out.append((task_id, codec, len(data), data, None, None))
            else:
                out.append((task_id, codec, len(data), None,
                             self._write_value_file(run_id, task_id, data), None))
        return out

    def _write_value_file(self, run_id: str, task_id: str, data: bytes) -> str:
        digest = hashlib.sha256(task_id.encode()).hexdigest()[:8]
        path = self._run_dir(run_id) / f"{_SAFE.sub('_', task_id)}-{digest}.pkl"
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

    def _decode(self, stored: StoredValue) -> tuple[Any, str | None]:
        if stored.error:
            return MISSING, stored.error
        try:
            data = stored.data if stored.path is None else Path(stored.path).read_bytes()
            assert data is not None
            return self._loads(bytes(data)), None
        except Exception as exc:  # gone or unreadable (a class that moved): re-run the task
            return MISSING, f"could not read the stored value: {type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ reading (callers)
    def get_run(self, run_id: str) -> RunRecord:
        """The record of run ``run_id``; :class:`RunNotFound` if there is none."""
        with self.connector.transaction(write=False) as tx:
            rows = tx.fetch(self._q["get_run"], {"id": run_id, "now": datetime.now(UTC)})
            if not rows:
                raise RunNotFound(f"no run {run_id!r} in the store {self.url}")
            return self._records(tx, rows)[0]

    def _records(self, tx: Tx, rows: Sequence[Mapping[str, Any]]) -> list[RunRecord]:
        """``runs`` rows as records, with their DAGs (each distinct one read and parsed once)."""
        hashes = sorted({r["dag_hash"] for r in rows})
        dags = {d["hash"]: tuple(TaskSnapshot.from_json(t) for t in json_column(d["tasks"]))
                for d in tx.fetch(self._q["get_dags"], {"hashes": hashes})} if hashes else {}
        return [RunRecord.from_row(r, dags.get(r["dag_hash"], ())) for r in rows]

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
        executor_of = {t.id: t.executor for t in run.tasks}
        transitions: list[TransitionRecord] = []
        values: dict[str, StoredValue] = {}
        for batch in batches:
            for entry in pickle.loads(batch["transitions"]):
                transitions.append(TransitionRecord.from_packed(
                    entry, started_at=run.started_at, executor=executor_of.get(entry[0]),
                    worker=batch["worker"], seq=len(transitions) + 1))
            if batch["task_values"] is not None:
                for fields in pickle.loads(batch["task_values"]):
                    stored = StoredValue(*fields)
                    values[stored.task_id] = stored
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
                    value, value_error = self._decode(found)
            tasks[snap.id] = StoredTask(snap.id, snap.fingerprint, snap.deps, state, attempts,
                                        value, value_error, error)
        return StoredRun(run, tasks, tuple(transitions))

    def events(self, run_id: str) -> list[EventRecord]:
        """The run's event log, oldest first."""
        with self.connector.transaction(write=False) as tx:
            rows = tx.fetch(self._q["run_events"], {"id": run_id})
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
        ``running`` holds a live lease, ``crashed`` includes runs whose lease lapsed) or
        pipeline."""
        if status is not None:
            status = str(StoredStatus(status))
        with self.connector.transaction(write=False) as tx:
            rows = tx.fetch(self._q["list_runs"], {"status": status, "pipeline": pipeline,
                                                   "limit": limit, "now": datetime.now(UTC)})
            return self._records(tx, rows)

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
            for task_id, seconds in pickle.loads(row["durations"]).items():
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
