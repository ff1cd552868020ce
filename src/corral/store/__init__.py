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
    corral._launch.launch(resume, store).run()            # RunLocked if its lease is live

URLs: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (or a plain file path)
and ``postgresql://user@host:port/db`` (the ``postgres`` extra). Nothing here imports sqlite3
or psycopg until a store is opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

# What can go wrong with a store or a resume, for ``except`` clauses (corral._errors is private).
from corral._errors import (
    BrokenStore,
    CorruptHistory,
    NotResumable,
    RunLocked,
    RunNotFound,
    StoreTooNew,
)

if TYPE_CHECKING:
    from corral.store._base import (
        MISSING,
        EventRecord,
        RunRecord,
        Store,
        StoredRun,
        StoredStatus,
        StoredTask,
        TaskSnapshot,
        TransitionRecord,
    )
    from corral.store._recorder import StoreRecorder
    from corral.store._resume import Resume, ResumePlan, plan_resume, prepare_resume

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
    "Store",
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
    "resolve_url",
    "store_exists",
]

# The embedded default: a file in the working directory's .corral folder, beside the logs.
DEFAULT_URL = "sqlite:///.corral/corral.db"
ENV_VAR = "CORRAL_STORE"

_LAZY = {
    "MISSING": "corral.store._base",
    "EventRecord": "corral.store._base",
    "RunRecord": "corral.store._base",
    "Store": "corral.store._base",
    "StoredRun": "corral.store._base",
    "StoredStatus": "corral.store._base",
    "StoredTask": "corral.store._base",
    "TaskSnapshot": "corral.store._base",
    "TransitionRecord": "corral.store._base",
    "StoreRecorder": "corral.store._recorder",
    "Resume": "corral.store._resume",
    "ResumePlan": "corral.store._resume",
    "plan_resume": "corral.store._resume",
    "prepare_resume": "corral.store._resume",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'corral.store' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def resolve_url(url: str | None = None) -> str:
    """The store URL to use: ``url`` if given, else ``$CORRAL_STORE``, else the default."""
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL


def sqlite_path(url: str) -> Path:
    """The file of a SQLite URL (``sqlite:///rel``, ``sqlite:////abs``) or plain path."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    if url.startswith("sqlite://"):
        raise ValueError(f"a SQLite store URL is sqlite:///path, not {url!r}")
    return Path(url)


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def store_exists(url: str | None = None) -> bool:
    """Whether the store at ``url`` (see :func:`resolve_url`) may hold runs: for SQLite,
    whether its file exists. A PostgreSQL store lives on its server and always may."""
    url = resolve_url(url)
    _check_scheme(url)
    return is_postgres(url) or sqlite_path(url).exists()


def _check_scheme(url: str) -> None:
    if "://" in url and not is_postgres(url) and not url.startswith("sqlite:"):
        scheme = url.split("://", 1)[0]
        raise ValueError(f"unknown store URL scheme {scheme!r} in {url!r}: "
                         "use sqlite:///path or postgresql://...")


def open_store(
    url: str | None = None,
    *,
    lock_timeout: float = 10.0,
    value_limit: int | None = None,
    values_dir: str | Path | None = None,
    migrate: bool = True,
) -> Store:
    """Open (and by default create or upgrade) the store at ``url``; see :func:`resolve_url`.

    ``lock_timeout`` is how long to wait for a locked database before :class:`BrokenStore`.
    Values larger than ``value_limit`` bytes (default 1 MiB) go to files under
    ``values_dir``: for SQLite a ``values`` folder beside the database, for PostgreSQL
    ``.corral/values`` in the working directory.
    """
    from corral.store._base import DEFAULT_VALUE_LIMIT, Connector, Store

    url = resolve_url(url)
    connector: Connector
    if is_postgres(url):
        from corral.store.postgres import PostgresConnector

        connector = PostgresConnector(url, lock_timeout=lock_timeout)
        default_values = Path.cwd() / ".corral" / "values"
    else:
        _check_scheme(url)
        from corral.store.sqlite import SQLiteConnector

        path = sqlite_path(url).absolute()
        connector = SQLiteConnector(path, url=url, lock_timeout=lock_timeout)
        default_values = path.parent / "values"
    store = Store(
        connector,
        values_dir=Path(values_dir) if values_dir is not None else default_values,
        value_limit=DEFAULT_VALUE_LIMIT if value_limit is None else value_limit,
    )
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store
