"""The bottom layer of the SQL stores: a connector only executes, and the SQL lives in files.

::

    SQLStore (manager) ──named query + params──> Connector ──> sqlite3 | psycopg
                                                 (transactions, parameter adaptation,
                                                  driver errors → BrokenStore naming the URL)

Queries are named in ``sql/<backend>/queries.sql`` (``-- name: x`` starts query ``x``); each
schema version is ``sql/<backend>/NNNN_name.sql``. A connector knows nothing of runs.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import resources
from typing import Any, ClassVar, Protocol

from corral._errors import BrokenStore

__all__ = ["Connector", "PoolStats", "Tx", "load_queries", "load_sql", "migrations", "redact"]


class Tx(Protocol):
    """One open transaction. Parameters are a mapping, named in the backend's query style."""

    def fetch(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]: ...

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int: ...

    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def script(self, sql: str) -> None: ...


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A connection pool at one moment: for health pages and metrics."""

    size: int  # connections open now (in use or idle)
    max: int  # the most it may open
    active: int  # in use by a transaction
    idle: int  # open, waiting for one
    waiting: int  # callers queued for a connection

    @property
    def saturation(self) -> float:
        """Connections in use over the most there may be, 0..1."""
        return self.active / self.max if self.max else 0.0


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

    def pool_stats(self) -> PoolStats | None:
        """The connection pool's figures; None for a backend without a pool (SQLite). Cheap:
        read from the pool, no round trip."""
        return None

    def broken(self, exc: BaseException, doing: str) -> BrokenStore:
        return BrokenStore(f"could not {doing}: {exc}", url=self.url)


def redact(url: str) -> str:
    """``url`` with any password masked, fit for error messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_sql(backend: str, name: str, *, package: str = "corral.store") -> str:
    return resources.files(package).joinpath("sql", backend, name).read_text("utf-8")


def load_queries(backend: str, *, package: str = "corral.store") -> dict[str, str]:
    """The named queries of ``package``'s ``sql/<backend>/queries.sql`` (the store's, or the
    fleet's PostgreSQL broker's): ``-- name: x`` starts query x."""
    text = load_sql(backend, "queries.sql", package=package)
    parts = _NAME.split(text)
    return {parts[k]: parts[k + 1].strip() for k in range(1, len(parts), 2)}


def migrations(backend: str, *, package: str = "corral.store") -> list[tuple[int, str]]:
    """``(version, sql)`` of every numbered migration (``0001_init.sql``...) of ``package``'s
    ``sql/<backend>/``, in order."""
    folder = resources.files(package).joinpath("sql", backend)
    out = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_\w+\.sql", entry.name)
        if match:
            out.append((int(match.group(1)), entry.read_text("utf-8")))
    return sorted(out)
