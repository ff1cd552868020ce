"""Durable runs: a store of runs, their history and results, and resume after a crash.

::

    store = open_store()                      # .corral/corral.db, or $CORRAL_STORE, or a URL
    recorder = StoreRecorder(store, source_path="pipeline.yaml")
    runner = Runner(graph, listeners=[recorder]); recorder.attach(runner)
    await runner.run()                        # every transition group-committed as it happens

    stored = store.load_run(run_id)           # checked against the state machine
    plan = plan_resume(graph, stored)         # what to reuse, what re-runs and why
    Runner(graph, done=plan.reuse, ...)       # with StoreRecorder(store, resume_of=run_id)

    # All of the above, as `corral resume` and dag.run(store=..., resume=run_id) do it:
    resume = prepare_resume(store, dag, run_id=run_id)   # or pipeline=: its latest unfinished
    resume.plan.rerun                                     # what re-runs and why (--dry-run)
    corral._launch.launch(resume, store).run()            # RunLocked if its lease holds

The package, layer by layer::

    _interface  Store (the protocol everything above uses), StoreBackend, the URL registry
    _records    RunRecord, TransitionRecord, EventRecord, StoredRun...: what a store gives
    _sql        SQLStore, the manager of the SQL stores   ─┐ sqlite.py / postgres.py: the
    _connector  Connector, named queries, migrations      ─┘ connectors and their BACKEND
    _codec      JSON history, task values, signed pickles; _owner: the lease's process
    _history    the state machine a loaded history must follow; _migrations: Python steps
    _schema     versioned schemas: the migrator (the store's, and the fleet broker's)
    _recorder   StoreRecorder, the run listener; _resume: choosing and planning a resume

URLs: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (or a plain file path),
``postgresql://user@host:port/db`` (the ``postgres`` extra), and any scheme a package
registers in the ``corral.stores`` entry-point group. Nothing here imports sqlite3, psycopg
or orjson until a store is opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from corral._errors import (
    BrokenStore,
    CorruptHistory,
    NotResumable,
    RunLocked,
    RunNotFound,
    StoreTooNew,
)

# What can go wrong with a store or a resume, for ``except`` clauses (corral._errors is private).
from corral._lazy import lazy_attributes as _lazy_attributes

if TYPE_CHECKING:
    from corral.store._interface import (
        Store,
        StoreBackend,
        StoreOptions,
        register_backend,
    )
    from corral.store._recorder import StoreRecorder
    from corral.store._records import (
        MISSING,
        EventRecord,
        RunRecord,
        StoredRun,
        StoredStatus,
        StoredTask,
        TaskSnapshot,
        TransitionRecord,
    )
    from corral.store._resume import Resume, ResumePlan, plan_resume, prepare_resume
    from corral.store._sql import SQLStore

__all__ = [
    "DEFAULT_URL",
    "MISSING",
    "BrokenStore",
    "CorruptHistory",
    "EventRecord",
    "NotResumable",
    "Resume",
    "ResumePlan",
    "RunLocked",
    "RunNotFound",
    "RunRecord",
    "SQLStore",
    "Store",
    "StoreBackend",
    "StoreOptions",
    "StoreRecorder",
    "StoreTooNew",
    "StoredRun",
    "StoredStatus",
    "StoredTask",
    "TaskSnapshot",
    "TransitionRecord",
    "open_store",
    "plan_resume",
    "prepare_resume",
    "register_backend",
    "resolve_url",
    "store_exists",
]

# The embedded default: a file in the working directory's .corral folder, beside the logs.
DEFAULT_URL = "sqlite:///.corral/corral.db"
ENV_VAR = "CORRAL_STORE"

_LAZY = {
    "MISSING": "corral.store._records",
    "EventRecord": "corral.store._records",
    "RunRecord": "corral.store._records",
    "StoredRun": "corral.store._records",
    "StoredStatus": "corral.store._records",
    "StoredTask": "corral.store._records",
    "TaskSnapshot": "corral.store._records",
    "TransitionRecord": "corral.store._records",
    "Store": "corral.store._interface",
    "StoreBackend": "corral.store._interface",
    "StoreOptions": "corral.store._interface",
    "register_backend": "corral.store._interface",
    "SQLStore": "corral.store._sql",
    "StoreRecorder": "corral.store._recorder",
    "Resume": "corral.store._resume",
    "ResumePlan": "corral.store._resume",
    "plan_resume": "corral.store._resume",
    "prepare_resume": "corral.store._resume",
}


__getattr__ = _lazy_attributes("corral.store", _LAZY)


def resolve_url(url: str | None = None) -> str:
    """The store URL to use: ``url`` if given, else ``$CORRAL_STORE``, else the default."""
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL


def store_exists(url: str | None = None) -> bool:
    """Whether the store at ``url`` (see :func:`resolve_url`) may hold runs: for SQLite,
    whether its file exists. A PostgreSQL store lives on its server and always may.
    ``ValueError`` for a URL no backend serves."""
    from corral.store._interface import backend_for

    url = resolve_url(url)
    return backend_for(url).exists(url)


def open_store(
    url: str | None = None,
    *,
    lock_timeout: float = 10.0,
    value_limit: int | None = None,
    values_dir: str | Path | None = None,
    migrate: bool = True,
    pickle_values: bool | None = None,
    key: bytes | str | None = None,
    connections: int | None = None,
) -> Store:
    """Open (and by default create or upgrade) the store at ``url``; see :func:`resolve_url`.

    ``connections`` caps a PostgreSQL store's connection pool (default 4; SQLite has one).

    ``lock_timeout`` is how long to wait for a locked database before :class:`BrokenStore`.
    Values larger than ``value_limit`` bytes (default 1 MiB) go to files under
    ``values_dir``: for SQLite a ``values`` folder beside the database, for PostgreSQL
    ``.corral/values`` in the working directory. Task values are stored as JSON; a value that
    is not JSON data is stored only with ``pickle_values`` (default: ``$CORRAL_STORE_PICKLE``
    is ``1``), as a pickle signed with ``key`` (default: ``$CORRAL_STORE_KEY``, else the key
    file ``~/.config/corral/store.key``, made when first needed). See docs/durable-runs.md.
    """
    from corral.store._interface import backend_for

    url = resolve_url(url)
    if pickle_values is None:
        pickle_values = os.environ.get("CORRAL_STORE_PICKLE", "").lower() in ("1", "true", "yes")
    return backend_for(url).open(url, lock_timeout=lock_timeout, value_limit=value_limit,
                                 values_dir=values_dir, migrate=migrate,
                                 pickle_values=pickle_values, key=key,
                                 **({"connections": connections} if connections else {}))
