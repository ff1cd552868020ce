"""The run store's records: what a :class:`~corral.store.Store` takes and gives back.

Plain frozen values with named constructors (``from_row``, ``from_packed``, ``from_json``), the
same for every backend. A backend maps them to its rows; callers (the recorder, resume, the
CLI, the server) never see a row.

Rows come from outside the process (a shared PostgreSQL, a copied SQLite file), so every
``from_*`` constructor checks the types it reads and raises ``ValueError`` (or ``TypeError``,
``KeyError``) on anything else; the manager turns that into
:class:`~corral._errors.CorruptHistory` naming the run. Nothing here unpickles.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

from corral._spec import TaskState

__all__ = [
    "MISSING",
    "PACKED_FIELDS",
    "EventRecord",
    "RunRecord",
    "StoredRun",
    "StoredStatus",
    "StoredTask",
    "TaskSnapshot",
    "TransitionRecord",
    "dag_hash",
    "json_column",
    "json_hash",
    "packed_entry",
    "snapshot_json",
]

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


def _dt(value: Any) -> datetime | None:
    """A row's timestamp (a datetime from PostgreSQL, epoch seconds from SQLite) as UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


def json_column(value: Any) -> Any:
    """A JSON column's value: parsed by psycopg already (json, jsonb), text from SQLite."""
    from corral.store._codec import loads

    return loads(value) if isinstance(value, str | bytes) else value


def _str(value: Any, what: str) -> str:
    if type(value) is not str:
        raise ValueError(f"{what} is {type(value).__name__}, not a string")
    return value


def _opt_str(value: Any, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise ValueError(f"{what} is {type(value).__name__}, not an integer")
    return value


def _num(value: Any, what: str) -> float:
    if type(value) is not float and type(value) is not int:
        raise ValueError(f"{what} is {type(value).__name__}, not a number")
    return value


class TaskSnapshot(NamedTuple):
    """One task as it was defined when the run started."""

    id: str
    deps: tuple[str, ...]
    fingerprint: str
    executor: str

    # Stored as JSON ``[id, deps, fingerprint, executor]`` (json writes the tuple so): twice
    # as fast to encode as an object, and a run stores one per task before it starts.

    @classmethod
    def from_json(cls, data: Sequence[Any] | Mapping[str, Any]) -> TaskSnapshot:
        if isinstance(data, Mapping):  # as schema version 1 stored it
            data = (data["id"], data["deps"], data["fingerprint"], data["executor"])
        task_id, deps, fingerprint, executor = data
        if not isinstance(deps, list | tuple):
            raise ValueError(f"the dependencies of task {task_id!r} are not a list")
        return cls(_str(task_id, "a task id"), tuple(_str(d, "a dependency") for d in deps),
                   _str(fingerprint, "a fingerprint"), _str(executor, "an executor"))


def snapshot_json(tasks: Sequence[TaskSnapshot]) -> bytes:
    """The DAG as the ``dags`` table stores it: ``[[id, deps, fingerprint, executor], ...]``."""
    import orjson

    return orjson.dumps(tasks, default=list)  # a named tuple is not JSON to orjson: a list


def dag_hash(tasks: Sequence[TaskSnapshot]) -> str:
    """A hash of a DAG's shape and definitions (of its stored JSON): equal hashes, same tasks
    in the same order, with the same dependencies, code and executors."""
    return json_hash(snapshot_json(tasks))


def json_hash(data: bytes) -> str:
    """:func:`dag_hash` of the DAG whose :func:`snapshot_json` is ``data``."""
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One stored run (without its history).

    ``log_dir`` is the run's log folder: its transitions name their log files relative to it.
    ``lease_owner`` names who holds the run's lease (``user@host:pid``, for people);
    ``owner_process`` identifies that process for the store's takeover rule (boot id, pid
    namespace, pid and start time; None where the platform cannot tell). ``lease_live`` is
    whether the lease holds now: not lapsed, and its owner not known to be gone.
    ``tasks_json`` is :func:`snapshot_json` of ``tasks`` when whoever made the record has it
    already (the recorder hashes it): a store writes it instead of encoding ``tasks`` again.
    """

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
    owner_process: str | None = None
    log_dir: str | None = None
    tasks_json: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_row(cls, row: Mapping[str, Any], tasks: tuple[TaskSnapshot, ...]) -> RunRecord:
        """The record of a ``runs`` row whose DAG (the ``dags`` row) is ``tasks``."""
        started = _dt(row["started_at"])
        if started is None:
            raise ValueError("the run has no start time")
        params = json_column(row["params"])
        if not isinstance(params, dict) or not all(
                type(k) is str and type(v) is str for k, v in params.items()):
            raise ValueError("the run's parameters are not a mapping of strings")
        reused = json_column(row["reused"])
        if not isinstance(reused, list):
            raise ValueError("the run's reused tasks are not a list")
        return cls(
            id=_str(row["id"], "the run id"),
            pipeline=_str(row["pipeline"], "the pipeline"),
            status=StoredStatus(row["status"]),
            tasks=tasks,
            params=params,
            started_at=started,
            host=row["host"],
            user=row["user_name"],
            pid=row["pid"],
            dag_hash=row["dag_hash"],
            source_path=_opt_str(row["source_path"], "the source path"),
            source_text=_opt_str(row["source_text"], "the source text"),
            reused=tuple(_str(t, "a reused task") for t in reused),
            resumed_from=row["resumed_from"],
            resumed_by=row["resumed_by"],
            finished_at=_dt(row["finished_at"]),
            lease_owner=row["lease_owner"],
            lease_until=_dt(row["lease_until"]),
            lease_live=bool(row.get("lease_live")),
            owner_process=row.get("owner_process"),
            log_dir=_opt_str(row.get("log_dir"), "the log folder"),
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
            "owner_process": self.owner_process,
            "log_dir": self.log_dir,
            "lease_s": lease_s,
        }

    def evolve(self, **changes: Any) -> RunRecord:
        if "tasks" in changes:  # the JSON of the tasks it had is not theirs
            changes.setdefault("tasks_json", None)
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
        """The status as seen now: a run still marked running whose lease no longer holds
        (it lapsed, or its process is gone) died without recording its end, so it is shown
        (and filtered) as crashed."""
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
        log_dir: str | None = None,
    ) -> TransitionRecord:
        """One transition of a batch (see :data:`PACKED_FIELDS`); ``at`` is ``started_at``
        plus its clock, ``worker`` the batch's unless the entry names its own, a log path
        relative to ``log_dir`` (an absolute one stays as it is). Raises ``ValueError`` for
        an entry of the wrong shape or types."""
        if type(entry) is not list or not 4 <= len(entry) <= len(PACKED_FIELDS):
            raise ValueError(f"transition #{seq} is not a list of 4 to 10 fields")
        fields: list[Any] = [*entry, *_NO_FIELDS[len(entry):]]
        task_id, state, attempt, clock, duration, error, tb, exit_code, log_path, own_worker = (
            fields)
        clock = _num(clock, "its clock")
        return cls(
            task_id=_str(task_id, "its task"), state=TaskState(state),
            attempt=_int(attempt, "its attempt"), at=started_at + timedelta(seconds=clock),
            clock=clock, duration_s=None if duration is None else _num(duration, "a duration"),
            error=_opt_str(error, "its error"), traceback=_opt_str(tb, "its traceback"),
            exit_code=None if exit_code is None else _int(exit_code, "its exit code"),
            executor=executor,
            worker=_opt_str(own_worker, "its worker") if own_worker is not None else worker,
            log_path=(os.path.join(log_dir, _str(log_path, "its log path"))
                      if log_dir and log_path is not None
                      else _opt_str(log_path, "its log path")), seq=seq,
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
    """One entry of a run's event log (``run_started``, ``resumed``, ``run_finished``...)."""

    kind: str
    at: datetime
    task_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    seq: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EventRecord:
        at = _dt(row["at"])
        if at is None:
            raise ValueError("the event has no time")
        data = json_column(row["data"])
        if not isinstance(data, dict):
            raise ValueError("the event's data is not an object")
        return cls(_str(row["kind"], "the event kind"), at,
                   _opt_str(row["task_id"], "the event's task"), data, row["seq"])

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
    # The run's shared context (corral.context()) as its last stored change left it.
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def params(self) -> Mapping[str, str]:
        return self.run.params
