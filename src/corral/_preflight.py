"""Startup validation: what the settings ask for, against what the machine and database have.

Before a run starts, :func:`check` compares :class:`Demand` records (PostgreSQL connections,
memory, tasks at once) with the :class:`Machine` (CPUs, physical memory) and, for a
PostgreSQL store, the :class:`Database` (``max_connections`` less the superuser reserve).
Asking for more than there is raises :class:`~corral.errors.StartRefused` (exit 2), naming
the numbers and the setting to change; legal but unwise is a warning the caller prints::

    settings -> demands ─┐
    machine()  ──────────┼─> check() -> warnings | StartRefused
    database_limits(url) ┘

The checks are pure (facts in, verdict out); only :func:`machine` and
:func:`database_limits` look at the world. Seam: executor pools (issue 13 §2) add a demand
each (max workers times connections per worker, and memory per worker).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from corral._errors import StartRefused

__all__ = ["Database", "Demand", "Machine", "check", "database_limits", "machine"]

# More tasks at once than this many per CPU, on an executor that gives each task a process,
# is legal but mostly contention: warn.
PROCESSES_PER_CPU = 4


@dataclass(frozen=True, slots=True)
class Machine:
    """This host: its CPU count and physical memory in MiB (None: unknown)."""

    cpus: int
    memory_mb: float | None


@dataclass(frozen=True, slots=True)
class Database:
    """A PostgreSQL server's connection limits, as seen at start."""

    url: str  # password hidden
    max_connections: int
    reserved: int  # superuser_reserved_connections (+ reserved_connections): not ours
    in_use: int  # connections open now, ours and others'

    @property
    def usable(self) -> int:
        return self.max_connections - self.reserved


@dataclass(frozen=True, slots=True)
class Demand:
    """What one setting asks for; ``setting`` is how to change it (``--store-connections``,
    ``CORRAL_STORE_CONNECTIONS``)."""

    setting: str
    connections: int = 0
    memory_mb: float = 0.0
    concurrency: int = 0
    processes: bool = False  # its tasks each get a process (a CPU's worth of work)


def machine() -> Machine:
    """The CPUs and physical memory of this host."""
    cpus = os.cpu_count() or 1
    memory: float | None = None
    try:
        memory = float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        memory = _meminfo_mb()
    return Machine(cpus=cpus, memory_mb=memory)


def _meminfo_mb() -> float | None:  # pragma: no cover - where sysconf lacks the pages
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return float(int(line.split()[1]) // 1024)
    except (OSError, ValueError, IndexError):
        pass
    return None


def database_limits(url: str) -> Database:
    """``max_connections``, the reserve and the connections in use on the server at ``url``.
    Raises BrokenStore (exit 3, URL redacted) when it cannot be reached."""
    import psycopg

    from corral._errors import BrokenStore
    from corral.store._connector import redact

    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            settings: dict[str, str] = dict(conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('max_connections', 'superuser_reserved_connections', 'reserved_connections')"
            ).fetchall())
            row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                               "WHERE backend_type = 'client backend'").fetchone()
    except psycopg.Error as exc:
        raise BrokenStore(f"cannot connect to check max_connections: {exc}".strip(),
                          url=redact(url)) from exc
    reserved = sum(int(settings.get(name, "0")) for name in
                   ("superuser_reserved_connections", "reserved_connections"))
    return Database(url=redact(url), max_connections=int(settings["max_connections"]),
                    reserved=reserved, in_use=int(row[0]) if row else 0)


def check(host: Machine, demands: list[Demand], database: Database | None = None) -> list[str]:
    """Warnings for what is legal but unwise; raises StartRefused for what cannot work."""
    refusals: list[str] = []
    warnings: list[str] = []
    if database is not None:
        asked = sum(d.connections for d in demands)
        by = ", ".join(f"{d.connections} for {d.setting}" for d in demands if d.connections)
        if asked > database.usable:
            refusals.append(
                f"this start needs {asked} PostgreSQL connections ({by}) but {database.url} "
                f"allows {database.usable} (max_connections {database.max_connections} less "
                f"{database.reserved} reserved): lower the setting, or raise max_connections")
        elif asked > database.usable - database.in_use:
            warnings.append(
                f"this start needs {asked} PostgreSQL connections ({by}); {database.url} has "
                f"{database.usable - database.in_use} free now ({database.in_use} of "
                f"{database.usable} in use): it may wait for connections")
    memory = sum(d.memory_mb for d in demands)
    if host.memory_mb is not None and memory > host.memory_mb:
        by = ", ".join(f"{d.memory_mb:g} MiB for {d.setting}" for d in demands if d.memory_mb)
        refusals.append(f"this start asks for {memory:g} MiB of memory ({by}) but the machine "
                        f"has {host.memory_mb:g} MiB: lower it")
    for demand in demands:
        if demand.processes and demand.concurrency > PROCESSES_PER_CPU * host.cpus:
            warnings.append(
                f"{demand.setting} is {demand.concurrency} on {host.cpus} CPUs, and tasks "
                f"run in processes: more than {PROCESSES_PER_CPU} per CPU mostly adds "
                "contention")
    if refusals:
        raise StartRefused("refusing to start: " + "\n".join(refusals))
    return warnings
