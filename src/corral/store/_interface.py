"""The run store's contract: the :class:`Store` protocol, and the registry of URL schemes.

Everything that records or reads runs (the recorder, resume, the CLI, the server) talks to a
:class:`Store`, never to a class. A backend is a :class:`StoreBackend` registered for its URL
schemes::

    open_store("sqlite:///.corral/corral.db") ─┐
    open_store("postgresql://host/db")     ────┼─> backend_for(url) ─> backend.open(url, **options)
    open_store("mystore://...")            ────┘    built-ins: sqlite (and plain paths),
                                                    postgresql, postgres; then the
                                                    ``corral.stores`` entry points

A third-party backend declares, in its package metadata::

    [project.entry-points."corral.stores"]
    mystore = "mypkg.store:backend"      # an object with open(url, **options) and exists(url)

and passes ``tests/conformance/store`` (add one factory line there). Its ``open`` receives
the :class:`StoreOptions` it understands and ignores the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

if TYPE_CHECKING:
    from corral.store._records import (
        EventRecord,
        RunRecord,
        StoredRun,
        StoredStatus,
        TransitionRecord,
    )

__all__ = [
    "ENTRY_POINT_GROUP",
    "Store",
    "StoreBackend",
    "StoreOptions",
    "backend_for",
    "register_backend",
    "scheme_of",
]

ENTRY_POINT_GROUP = "corral.stores"


@runtime_checkable
class Store(Protocol):
    """A run store. Open one with :func:`corral.store.open_store`.

    For callers: :meth:`get_run`, :meth:`load_run`, :meth:`latest_unfinished`,
    :meth:`list_runs`, :meth:`events`, :meth:`task_durations`, :meth:`prune`, :meth:`close`.
    For the recorder (and tests): :meth:`begin_run`, :meth:`write`, :meth:`checkpoint`.

    What every implementation guarantees (``tests/conformance/store`` checks it):

    - ``begin_run`` and each ``write`` are atomic: all of it is stored, or none;
    - history is append-only and read back in the order written;
    - claiming a run to resume is atomic: of two claimants, one wins; a run whose lease holds
      is never claimed (:class:`~corral._errors.RunLocked`); a lease stops holding when it
      lapses, or when its owner's process is known to be gone (``RunRecord.owner_process``);
    - reading never runs code stored in the store, and a row it cannot read is
      :class:`~corral._errors.CorruptHistory` (or :class:`~corral._errors.BrokenStore`), never
      another exception;
    - driver errors leave as :class:`~corral._errors.BrokenStore` naming :attr:`url`.
    """

    @property
    def url(self) -> str:
        """Where the store is, with any password masked: for messages."""
        ...

    def begin_run(
        self,
        record: RunRecord,
        *,
        lease_s: float,
        resume_of: str | None = None,
        events: Sequence[EventRecord] = (),
    ) -> None:
        """Record a new run holding a lease of ``lease_s`` seconds, in one transaction; with
        ``resume_of``, first take that run over (else RunLocked / RunNotFound, nothing
        written)."""
        ...

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
        """Append a batch of history in one transaction (group commit): packed transitions
        (:data:`~corral.store._records.PACKED_FIELDS`) or records, ``(task_id, value)``
        pairs, events; extend the lease of ``(owner, seconds)``; ``finish`` ends the run."""
        ...

    def checkpoint(self) -> None:
        """Upkeep between commits, off the run's path (SQLite folds its write-ahead log).
        May do nothing."""
        ...

    def get_run(self, run_id: str) -> RunRecord:
        """The record of run ``run_id``; RunNotFound if there is none."""
        ...

    def load_run(self, run_id: str) -> StoredRun:
        """A run with its history checked against the task state machine, each task's last
        state and stored value."""
        ...

    def events(self, run_id: str) -> list[EventRecord]:
        """The run's event log, oldest first."""
        ...

    def latest_unfinished(self, pipeline: str) -> RunRecord | None:
        """The newest run of ``pipeline`` that did not succeed and was not resumed yet."""
        ...

    def list_runs(
        self,
        *,
        status: StoredStatus | str | None = None,
        pipeline: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Runs, newest first, optionally of one observed status or pipeline."""
        ...

    def task_durations(self, pipeline: str, task_ids: Sequence[str]) -> dict[str, float]:
        """Per task, the median duration (s) of its recent successful attempts."""
        ...

    def prune(self, older_than: timedelta | float) -> list[str]:
        """Delete runs that ended more than ``older_than`` ago; their ids."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Store: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class StoreOptions(TypedDict, total=False):
    """What :func:`~corral.store.open_store` passes to a backend (each may ignore some).

    ``lock_timeout``: seconds to wait for a locked database before BrokenStore.
    ``value_limit``: bytes above which a value goes to a file under ``values_dir``.
    ``migrate``: create or upgrade the schema on open.
    ``pickle_values``: store values that are not JSON data as signed pickles.
    ``key``: the key that signs them (default: ``$CORRAL_STORE_KEY`` or the key file).
    """

    lock_timeout: float
    value_limit: int | None
    values_dir: str | Path | None
    migrate: bool
    pickle_values: bool
    key: bytes | str | None


class StoreBackend(Protocol):
    """A kind of store, for the URL schemes it is registered under."""

    def open(self, url: str, **options: Any) -> Store:
        """Open (and, with ``migrate``, create or upgrade) the store at ``url``."""
        ...

    def exists(self, url: str) -> bool:
        """Whether the store at ``url`` may hold runs (reading commands never create one)."""
        ...


_BACKENDS: dict[str, StoreBackend] = {}

# The built-in schemes, by the module whose ``BACKEND`` serves them (imported when first used:
# ``import corral.store`` loads neither sqlite3 nor psycopg).
_BUILT_IN = {"sqlite": "corral.store.sqlite", "postgresql": "corral.store.postgres",
             "postgres": "corral.store.postgres"}


def register_backend(scheme: str, backend: StoreBackend) -> None:
    """Serve URLs ``scheme://...`` with ``backend`` (replacing any earlier one)."""
    _BACKENDS[scheme.lower()] = backend


def scheme_of(url: str) -> str:
    """The scheme of a store URL; a plain path is a SQLite file."""
    return url.split("://", 1)[0].lower() if "://" in url else "sqlite"


def backend_for(url: str) -> StoreBackend:
    """The backend serving ``url``: a built-in, else one the ``corral.stores`` entry points
    name. ``ValueError`` naming the known schemes when there is none."""
    scheme = scheme_of(url)
    backend = _BACKENDS.get(scheme)
    if backend is None and scheme in _BUILT_IN:
        import importlib

        backend = _BACKENDS[scheme] = importlib.import_module(_BUILT_IN[scheme]).BACKEND
    if backend is None:
        backend = _from_entry_points(scheme)
    if backend is None:
        names = {*_BACKENDS, *_BUILT_IN, *_entry_point_names()}
        known = ", ".join(f"{s}://" for s in sorted(names))
        raise ValueError(f"unknown store URL scheme {scheme!r} in {url!r}: use one of {known} "
                         f"(sqlite:///path or postgresql://...)")
    return backend


def _entry_points() -> Any:
    from importlib.metadata import entry_points

    return entry_points(group=ENTRY_POINT_GROUP)


def _entry_point_names() -> list[str]:
    return [ep.name.lower() for ep in _entry_points()]


def _from_entry_points(scheme: str) -> StoreBackend | None:
    for ep in _entry_points():
        if ep.name.lower() == scheme:
            backend: StoreBackend = ep.load()
            _BACKENDS[scheme] = backend
            return backend
    return None
