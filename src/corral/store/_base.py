"""The run store's contract: records, the connector interface, and :class:`Store`.

Three layers, as in procrastinate (App → JobManager → Connector)::

    StoreRecorder / CLI / resume ──> Store ──named query + params──> Connector ──> sqlite3 | psycopg
                                     (manager)                       (executes, wraps errors)

:class:`Store` owns every storage operation: it picks the named query (``sql/<backend>/
queries.sql``), maps records to rows and back, runs the migrations, serialises task values,
and makes every state change one transaction. A :class:`Connector` only executes: it opens
transactions, adapts parameters to its driver and turns driver exceptions into
:class:`~corral._errors.BrokenStore` naming the store's URL (original as ``__cause__``).

What is stored (see ``sql/<backend>/0001_init.sql``): ``runs`` (one row per run: DAG snapshot,
params, pipeline source, status, lease), ``transitions`` (every task state change, append-only),
``task_values`` (results of succeeded tasks, inline up to ``value_limit``, else a file under
``values_dir``) and ``events`` (the run-level event log, append-only).
"""

from __future__ import annotations

import abc
import contextlib
import enum
import hashlib
import json
import os
import pickle
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol

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
    "TaskSnapshot",
    "TransitionRecord",
    "Tx",
]

# Values pickled to more than this are written to a file and referenced by path: large
# blobs bloat SQLite pages and PostgreSQL TOAST, and are rarely read back.
DEFAULT_VALUE_LIMIT = 1024 * 1024

# How many of a task's latest successful attempts its duration estimate is the median of.
DURATION_SAMPLES = 50


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


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


@dataclass(frozen=True, slots=True)
class TaskSnapshot:
    """One task as it was defined when the run started."""

    id: str
    deps: tuple[str, ...]
    fingerprint: str
    executor: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "deps": list(self.deps), "fingerprint": self.fingerprint,
                "executor": self.executor}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskSnapshot:
        return cls(data["id"], tuple(data["deps"]), data["fingerprint"], data["executor"])


def dag_hash(tasks: Sequence[TaskSnapshot]) -> str:
    """A hash of a DAG's shape and definitions: equal hashes, same tasks, deps and code."""
    payload = json.dumps(sorted((t.id, sorted(t.deps), t.fingerprint) for t in tasks))
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
    def from_row(cls, row: Mapping[str, Any]) -> RunRecord:
        snapshot = _json(row["snapshot"])
        started = _dt(row["started_at"])
        assert started is not None
        return cls(
            id=row["id"],
            pipeline=row["pipeline"],
            status=StoredStatus(row["status"]),
            tasks=tuple(TaskSnapshot.from_json(t) for t in snapshot["tasks"]),
            params=_json(row["params"]),
            started_at=started,
            host=row["host"],
            user=row["user_name"],
            pid=row["pid"],
            dag_hash=row["dag_hash"],
            source_path=row["source_path"],
            source_text=row["source_text"],
            reused=tuple(_json(row["reused"])),
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
            "snapshot": json.dumps({"tasks": [t.to_json() for t in self.tasks]}),
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
    def from_row(cls, row: Mapping[str, Any]) -> TransitionRecord:
        at = _dt(row["at"])
        assert at is not None
        return cls(
            task_id=row["task_id"], state=TaskState(row["state"]), attempt=row["attempt"],
            at=at, clock=row["clock"], duration_s=row["duration_s"], error=row["error"],
            traceback=row["traceback"], exit_code=row["exit_code"], executor=row["executor"],
            worker=row["worker"], log_path=row["log_path"], seq=row["seq"],
        )

    def to_row(self, run_id: str) -> dict[str, Any]:
        return {
            "run_id": run_id, "task_id": self.task_id, "state": str(self.state),
            "attempt": self.attempt, "at": self.at, "clock": self.clock,
            "duration_s": self.duration_s, "error": self.error, "traceback": self.traceback,
            "exit_code": self.exit_code, "executor": self.executor, "worker": self.worker,
            "log_path": self.log_path,
        }

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
        return cls(row["kind"], at, row["task_id"], _json(row["data"]), row["seq"])

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
    import cloudpickle  # lambdas and local classes too; only loaded once a value is stored

    data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return data


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

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ schema
    @property
    def schema_version(self) -> int:
        """The version the code writes: the highest numbered migration."""
        return migrations(self.connector.backend)[-1][0]

    def migrate(self) -> int:
        """Bring the schema up to date; return its version. Raises :class:`StoreTooNew` when
        the store was written by a newer corral. Concurrent migrators serialise on a lock."""
        q = self._q
        latest = self.schema_version
        with self.connector.transaction(write=False) as tx:
            current = self._current_version(tx)
        if current == latest:
            return current
        with self.connector.transaction(write=True) as tx:
            tx.fetch(q["migration_lock"])
            tx.script(q["schema_version_create"])
            current = self._current_version(tx)  # re-read under the lock: another may have won
            self._check_not_newer(current, latest)
            for version, sql in migrations(self.connector.backend):
                if version > current:
                    tx.script(sql)
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
            tx.execute(q["insert_run"], {**record.to_row(lease_s=lease_s),
                                         "now": datetime.now(UTC)})
            if events:
                tx.executemany(q["insert_event"], [e.to_row(record.id) for e in events])

    def _why_not_claimable(self, tx: Tx, run_id: str) -> Exception:
        rows = tx.fetch(self._q["get_run"], {"id": run_id, "now": datetime.now(UTC)})
        if not rows:
            return RunNotFound(f"no run {run_id!r} in the store {self.url}")
        run = RunRecord.from_row(rows[0])
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
        transitions: Sequence[TransitionRecord] = (),
        values: Sequence[tuple[str, Any]] = (),
        events: Sequence[EventRecord] = (),
        lease: tuple[str, float] | None = None,
        finish: tuple[StoredStatus, datetime] | None = None,
    ) -> None:
        """Append a batch of history in one transaction (group commit).

        ``values`` are ``(task_id, value)`` pairs, serialised here (outside the transaction);
        ``lease`` is ``(owner, seconds)`` to extend the run's lease; ``finish`` ends the run.
        """
        q = self._q
        value_rows = [self._encode(run_id, task_id, value) for task_id, value in values]
        with self.connector.transaction(write=True) as tx:
            if transitions:
                tx.executemany(q["insert_transition"], [t.to_row(run_id) for t in transitions])
            if value_rows:
                tx.executemany(q["insert_value"], value_rows)
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

    def _encode(self, run_id: str, task_id: str, value: Any) -> dict[str, Any]:
        row: dict[str, Any] = {"run_id": run_id, "task_id": task_id, "codec": self._codec,
                               "size": 0, "data": None, "path": None, "error": None}
        try:
            data = self._dumps(value)
        except Exception as exc:  # an unpicklable value: the task re-runs on resume
            row["error"] = f"could not serialise the value: {type(exc).__name__}: {exc}"
            return row
        row["size"] = len(data)
        if len(data) <= self.value_limit:
            row["data"] = data
            return row
        digest = hashlib.sha256(task_id.encode()).hexdigest()[:8]
        path = self.values_dir / _SAFE.sub("_", run_id) / f"{_SAFE.sub('_', task_id)}-{digest}.pkl"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)  # readers never see half a file
        except OSError as exc:
            raise BrokenStore(f"could not write the value of task {task_id!r} to {path}: {exc}",
                              url=self.url) from exc
        row["path"] = str(path)
        return row

    def _decode(self, row: Mapping[str, Any]) -> tuple[Any, str | None]:
        if row["error"]:
            return MISSING, row["error"]
        try:
            data = bytes(row["data"]) if row["path"] is None else Path(row["path"]).read_bytes()
            return self._loads(data), None
        except Exception as exc:  # gone or unreadable (a class that moved): re-run the task
            return MISSING, f"could not read the stored value: {type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ reading (callers)
    def get_run(self, run_id: str) -> RunRecord:
        """The record of run ``run_id``; :class:`RunNotFound` if there is none."""
        with self.connector.transaction(write=False) as tx:
            rows = tx.fetch(self._q["get_run"], {"id": run_id, "now": datetime.now(UTC)})
        if not rows:
            raise RunNotFound(f"no run {run_id!r} in the store {self.url}")
        return RunRecord.from_row(rows[0])

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
            run = RunRecord.from_row(rows[0])
            transitions = tuple(TransitionRecord.from_row(r)
                                for r in tx.fetch(q["run_transitions"], params))
            value_rows = tx.fetch(q["run_values"], params)
        outcomes = check_history(run, transitions, url=self.url)
        values = {r["task_id"]: r for r in value_rows}
        tasks: dict[str, StoredTask] = {}
        for snap in run.tasks:
            state, attempts, error = outcomes.get(snap.id, (None, 0, None))
            value: Any = MISSING
            value_error = None
            if state is TaskState.SUCCEEDED:
                row = values.get(snap.id)
                if row is None:
                    value_error = "no value was stored"
                else:
                    value, value_error = self._decode(row)
            tasks[snap.id] = StoredTask(snap.id, snap.fingerprint, snap.deps, state, attempts,
                                        value, value_error, error)
        return StoredRun(run, tasks, transitions)

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
        return RunRecord.from_row(rows[0]) if rows else None

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
        return [RunRecord.from_row(r) for r in rows]

    def task_durations(self, pipeline: str, task_ids: Sequence[str]) -> dict[str, float]:
        """Per task, the median duration (s) of its latest successful attempts in ``pipeline``;
        tasks with no such attempt are left out. For plan estimates."""
        if not task_ids:
            return {}
        with self.connector.transaction(write=False) as tx:
            rows = tx.fetch(self._q["successful_durations"],
                            {"pipeline": pipeline, "task_ids": list(task_ids),
                             "per_task": DURATION_SAMPLES})
        samples: dict[str, list[float]] = {}
        for r in rows:
            samples.setdefault(r["task_id"], []).append(float(r["duration_s"]))
        return {t: statistics.median(d) for t, d in samples.items()}

    def prune(self, older_than: timedelta | float) -> list[str]:
        """Delete runs that ended (or, crashed, started) more than ``older_than`` ago, with
        their history and value files; runs holding a live lease are kept. Returns their ids."""
        if not isinstance(older_than, timedelta):
            older_than = timedelta(seconds=older_than)
        now = datetime.now(UTC)
        params = {"cutoff": now - older_than, "now": now}
        with self.connector.transaction(write=True) as tx:
            paths = [r["path"] for r in tx.fetch(self._q["prune_values"], params)]
            pruned = [r["id"] for r in tx.fetch(self._q["prune_runs"], params)]
        for path in paths:  # after the commit: a rolled-back prune keeps its files
            with contextlib.suppress(OSError):
                Path(path).unlink()
        for run_id in pruned:
            with contextlib.suppress(OSError):
                (self.values_dir / _SAFE.sub("_", run_id)).rmdir()
        return pruned
