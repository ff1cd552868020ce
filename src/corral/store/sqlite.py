"""The SQLite connector: the embedded default store, one file (``.corral/corral.db``).

Policy: WAL journal (readers never block the writer, and a killed process loses nothing it
committed), checkpointed by :meth:`SQLiteConnector.checkpoint` between commits rather than
inside one; ``synchronous=NORMAL`` (durable across process crashes, which is what a run must
survive; a power cut may lose the last commits); foreign keys on (prune cascades); and a busy
timeout of ``lock_timeout`` after which a locked database is a :class:`BrokenStore`.

One connection per store, shared by the threads of this process under a lock (the recorder's
writer thread and the caller); other processes open their own and SQLite arbitrates. Every
write transaction is ``BEGIN IMMEDIATE``: it takes the write lock up front, so two writers
never deadlock upgrading a read lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from corral._errors import BrokenStore
from corral.store._connector import Connector
from corral.store._sql import SQLStore, open_sql_store

__all__ = ["BACKEND", "SQLiteBackend", "SQLiteConnector", "sqlite_path"]


def sqlite_path(url: str) -> Path:
    """The file of a SQLite URL (``sqlite:///rel``, ``sqlite:////abs``) or plain path."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    if url.startswith("sqlite://"):
        raise ValueError(f"a SQLite store URL is sqlite:///path, not {url!r}")
    return Path(url)


def _adapt(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """SQLite has no timestamp or array type: datetimes become epoch seconds, lists JSON."""
    out: dict[str, Any] = {}
    for k, v in (params or {}).items():
        if isinstance(v, datetime):
            v = v.timestamp()
        elif isinstance(v, list | tuple):
            v = json.dumps(list(v))
        out[k] = v
    return out


class _Tx:
    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def fetch(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        cur = self._conn.execute(sql, _adapt(params))
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        return self._conn.execute(sql, _adapt(params)).rowcount

    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self._conn.executemany(sql, [_adapt(r) for r in rows])

    def script(self, sql: str) -> None:
        # executescript() would COMMIT first; run the statements one by one in our
        # transaction instead (complete_statement knows where a trigger body ends).
        statement = ""
        for line in sql.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):
                self._conn.execute(statement)
                statement = ""
        if statement.strip() and not all(
            s.strip().startswith("--") or not s.strip() for s in statement.splitlines()
        ):
            raise ValueError(f"incomplete SQL statement at the end of a script: {statement!r}")


class SQLiteConnector(Connector):
    """Executes on one SQLite file. ``lock_timeout`` is how long to wait for a lock (s)."""

    backend = "sqlite"

    def __init__(self, path: str | Path, *, url: str | None = None, lock_timeout: float = 10.0):
        self.path = Path(path)
        super().__init__(url or f"sqlite:///{self.path}")
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=lock_timeout, isolation_level=None,
                                   check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise self.broken(exc, "open the database") from exc
        self._conn: sqlite3.Connection | None = conn
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            # No checkpoint inside a commit: it made the commit that ends a run 30-100 ms
            # slower. The recorder calls checkpoint() between commits instead, and closing the
            # last connection checkpoints too.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.Error as exc:
            conn.close()
            raise self.broken(exc, "open the database") from exc

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection (for tests and pragmas)."""
        if self._conn is None:
            raise BrokenStore("the store is closed", url=self.url)
        return self._conn

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[_Tx]:
        with self._lock:
            conn = self.connection
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise self.broken(exc, "begin a transaction") from exc
            try:
                yield _Tx(conn)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise self.broken(exc, "write" if write else "read") from exc
            except BaseException:
                self._rollback(conn)
                raise

    def checkpoint(self) -> None:
        """Copy what the write-ahead log holds into the database, without waiting for readers
        (PASSIVE): what they still use is copied next time."""
        with self._lock:
            try:
                self.connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                raise self.broken(exc, "checkpoint the write-ahead log") from exc

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:  # pragma: no cover - the connection is gone anyway
                pass

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class SQLiteBackend:
    """The ``sqlite`` scheme (and plain paths): a file, its large values in ``values/``
    beside it."""

    def open(self, url: str, **options: Any) -> SQLStore:
        path = sqlite_path(url).absolute()
        connector = SQLiteConnector(path, url=url,
                                    lock_timeout=options.pop("lock_timeout", 10.0))
        return open_sql_store(connector, default_values_dir=path.parent / "values", **options)

    def exists(self, url: str) -> bool:
        return sqlite_path(url).exists()


BACKEND = SQLiteBackend()
