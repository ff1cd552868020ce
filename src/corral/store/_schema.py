"""Versioned schemas: how a database is brought to the version the code writes.

A schema's versions are numbered SQL scripts (``sql/<backend>/0001_init.sql``...) of a package:
the run store's (``corral.store``) and the fleet's PostgreSQL broker's (``corral.fleet``). The
versions applied are rows of ``schema_version`` in the connection's current schema. A migrator
takes a lock on that schema, re-reads the version under it (another migrator may have won), and
applies the missing scripts in order, each followed by its Python step if it has one, all in one
transaction: a schema is wholly at a version or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime

from corral.store._connector import Tx, load_queries, migrations

__all__ = ["Step", "migrate_schema"]

Step = Callable[[Tx, str], None]  # (the migration's transaction, the backend)


def migrate_schema(
    transaction: Callable[..., AbstractContextManager[Tx]],
    backend: str,
    *,
    too_new: Callable[[int, int], Exception],
    package: str = "corral.store",
    steps: Mapping[int, Step] | None = None,
    target: int | None = None,
) -> int:
    """Bring the schema of ``package`` up to date (or up to version ``target``) through
    ``transaction(write=...)``; return its version. ``too_new(current, known)`` is raised
    when the database was written by a newer corral."""
    q = load_queries(backend)  # the version bookkeeping is the store's, for every package
    scripts = migrations(backend, package=package)
    known = scripts[-1][0]
    latest = known if target is None else target

    def current_version(tx: Tx) -> int:
        if not tx.fetch(q["schema_version_exists"])[0]["n"]:
            return 0
        current = int(tx.fetch(q["schema_version_current"])[0]["version"])
        if current > known:
            raise too_new(current, known)
        return current

    with transaction(write=False) as tx:
        current = current_version(tx)
    if current == latest:
        return current
    with transaction(write=True) as tx:
        tx.fetch(q["migration_lock"])
        tx.script(q["schema_version_create"])
        current = current_version(tx)  # re-read under the lock: another may have won
        if current > latest:
            raise too_new(current, latest)
        for version, sql in scripts:
            if current < version <= latest:
                tx.script(sql)
                step = (steps or {}).get(version)
                if step is not None:
                    step(tx, backend)
                tx.execute(q["schema_version_insert"],
                           {"version": version, "now": datetime.now(UTC)})
        return max(current, latest)
