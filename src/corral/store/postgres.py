"""The PostgreSQL connector: a store shared by services and hosts (``postgresql://...``).

psycopg 3 with a small connection pool (the recorder's writer and the readers of a process
share it). Tables live in the connection's ``search_path``, so one database can hold several
stores, one per schema (``?options=-csearch_path%3Dmy_schema``). Each connection sets
``lock_timeout`` so that a locked table is a :class:`BrokenStore` after that long, not a hang.
Leases use the server's clock (see ``sql/postgres/queries.sql``).

Needs the ``postgres`` extra: ``pip install 'corral[postgres]'``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral._errors import BrokenStore
from corral.store._connector import Connector, PoolStats
from corral.store._sql import SQLStore, open_sql_store

if TYPE_CHECKING:
    import psycopg

__all__ = ["BACKEND", "PostgresBackend", "PostgresConnector", "PsycopgTx"]

INSTALL_HINT = "the PostgreSQL store needs psycopg: pip install 'corral[postgres]'"


class PsycopgTx:
    """A :class:`~corral.store._connector.Tx` on a psycopg connection with dict rows (the
    store's, and the fleet broker's migrations)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        self._conn = conn

    def fetch(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._conn.execute(sql, params).fetchall()

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        return self._conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(sql, rows)

    def script(self, sql: str) -> None:
        self._conn.execute(sql.encode())  # no parameters: several statements in one go


class PostgresConnector(Connector):
    """Executes on a PostgreSQL database through a pool of ``max_size`` connections."""

    backend = "postgres"

    def __init__(
        self,
        url: str,
        *,
        lock_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        max_size: int = 4,
    ) -> None:
        super().__init__(url)
        try:
            import psycopg
            from psycopg.rows import dict_row
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise ImportError(INSTALL_HINT) from exc
        self._errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        # One plain connection first: an unreachable server or a refused login fails at once
        # with the server's own words, instead of a pool retrying (and logging) until timeout.
        try:
            psycopg.connect(url, connect_timeout=max(1, int(connect_timeout))).close()
        except psycopg.Error as exc:
            raise self.broken(exc, "connect") from exc
        lock_ms = str(max(1, int(lock_timeout * 1000)))

        def configure(conn: psycopg.Connection[Any]) -> None:
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (lock_ms,))
            conn.commit()

        self._pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"row_factory": dict_row, "autocommit": False,
                    "connect_timeout": max(1, int(connect_timeout))},
            configure=configure,
            open=False,
            name="corral-store",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except Exception as exc:  # PoolTimeout: the server is down, or refuses us
            self._pool.close()
            raise self.broken(exc, "connect") from exc

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[PsycopgTx]:
        try:
            with self._pool.connection() as conn:  # commits on success, rolls back on error
                yield PsycopgTx(conn)
        except BrokenStore:
            raise
        except self._errors as exc:
            raise self.broken(exc, "write" if write else "read") from exc

    def pool_stats(self) -> PoolStats:
        """From psycopg_pool's ``get_stats()`` (its counters are not reset)."""
        stats = self._pool.get_stats()
        size = stats.get("pool_size", 0)
        idle = stats.get("pool_available", 0)
        return PoolStats(size=size, max=stats.get("pool_max", self._pool.max_size),
                         active=max(0, size - idle), idle=idle,
                         waiting=stats.get("requests_waiting", 0))

    def close(self) -> None:
        self._pool.close()


class PostgresBackend:
    """The ``postgresql`` and ``postgres`` schemes: a store on a server, shared by hosts;
    large values go to ``.corral/values`` in the working directory."""

    def open(self, url: str, **options: Any) -> SQLStore:
        connector = PostgresConnector(url, lock_timeout=options.pop("lock_timeout", 10.0),
                                      max_size=options.pop("connections", 4))
        return open_sql_store(connector, default_values_dir=Path.cwd() / ".corral" / "values",
                              **options)

    def exists(self, url: str) -> bool:
        return True  # it lives on its server: it may always hold runs


BACKEND = PostgresBackend()
