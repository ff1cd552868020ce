"""Where a PostgreSQL broker lives: the schema its URL names (``?schema=NAME``, else
``corral_fleet``), made and brought to the code's version through the run store's migration
mechanism (:mod:`corral.store._schema`, with this package's ``sql/postgres/`` scripts), and the
server its connections count against."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from corral._errors import BrokenBroker

if TYPE_CHECKING:
    import psycopg

__all__ = ["DEFAULT_SCHEMA", "SCHEMA_NAME", "migrate", "quiet_driver_logs", "server_of",
           "split_schema"]

DEFAULT_SCHEMA = "corral_fleet"
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")  # leaves room in 63-byte channel names


def split_schema(url: str) -> tuple[str, str]:
    """``url`` without its ``schema=`` query parameter, and that schema (``corral_fleet``
    when it names none)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [v for k, v in query if k == "schema"]
    if not names:
        return url, DEFAULT_SCHEMA
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), names[-1]


def server_of(url: str) -> tuple[str, str] | None:
    """The (host, port) of a PostgreSQL URL, broker's or store's (None: not one psycopg reads):
    whose ``max_connections`` its connections count against."""
    import psycopg

    try:
        given = psycopg.conninfo.conninfo_to_dict(split_schema(url)[0])
    except psycopg.Error:
        return None
    return str(given.get("host") or ""), str(given.get("port") or "5432")


def migrate(conn: psycopg.Connection[Any], schema: str, shown: str) -> None:
    """Make the broker's schema if need be, then its tables, through the store's migrations."""
    from psycopg import sql
    from psycopg.rows import dict_row

    from corral.store._schema import migrate_schema
    from corral.store.postgres import PsycopgTx

    with conn.transaction():  # two brokers starting at once: one makes the schema
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('corral:' || %s))", (schema,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute("SELECT set_config('search_path', %s, false)", (schema,))
    conn.row_factory = dict_row  # what the migrations read

    @contextlib.contextmanager
    def transaction(write: bool = True) -> Iterator[PsycopgTx]:
        with conn.transaction():
            yield PsycopgTx(conn)

    def too_new(current: int, known: int) -> BrokenBroker:
        return BrokenBroker(f"the broker's schema {schema!r} at {shown} is version {current}, "
                            f"but this corral knows only up to version {known}: upgrade "
                            "corral to use it")

    migrate_schema(transaction, "postgres", package="corral.fleet", too_new=too_new)


def quiet_driver_logs() -> None:
    """Leave connection losses to our own message (``the broker failed, retrying: ...``):
    psycopg's pool and pipeline log each discarded connection as a warning, which nobody
    configured logging for reads as noise. Loggers set to another level than the library's
    own (psycopg's is WARNING, the pool's none) are left alone."""
    import logging

    for name in ("psycopg", "psycopg.pool"):
        logger = logging.getLogger(name)
        if logger.level in (logging.NOTSET, logging.WARNING):
            logger.setLevel(logging.ERROR)
