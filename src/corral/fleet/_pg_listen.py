"""Wake-ups for the PostgreSQL broker: one ``LISTEN`` connection per broker, in a thread.

A worker waiting for attempts and a coordinator waiting for events do not poll: they note how
many notifications they have seen (:meth:`Listener.seen`), query, and if the query found
nothing, wait until a new notification for what they want arrives (:meth:`Listener.wait`)::

    enqueue/post (pg_notify on commit) ──> server ──> listener thread ──counts (channel,
                                                                        payload), wakes──┐
    claim / read_events: seen() ─> query ─> nothing? wait(seen, up to block_s) <─────────┘

Notified between the count and the query, the waiter does not sleep: the count moved. While
the LISTEN connection is down (the server restarted, or ended it) the thread reconnects with
back-off and the waits time out after ``block_s``: a bounded fallback poll, never a busy one.
Each reconnection wakes every waiter (notifications may have been missed meanwhile).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Listener"]

RETRY_S = (0.1, 0.2, 0.5, 1.0, 2.0)  # between attempts to reconnect
READY_WAIT_S = 5.0  # how long the first waiter waits for LISTEN to be in place
POLL_S = 0.5  # how often the thread looks whether it is to stop


class Listener:
    """Counts notifications on ``channels`` of the connection ``connect()`` makes (autocommit,
    its own). Thread-safe; the thread starts with the first :meth:`seen`."""

    def __init__(self, connect: Callable[[], Any], channels: Iterable[str]) -> None:
        self._connect = connect
        self._channels = tuple(channels)
        self._cond = threading.Condition()
        self._counts: dict[tuple[str, str], int] = {}
        self._reconnects = 0  # bumped at each (re)connection: every waiter looks again
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def seen(self, keys: Iterable[tuple[str, str]]) -> int:
        """How many notifications for ``keys`` ((channel, payload) pairs) came so far."""
        if self._thread is None:
            with self._cond:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._listen, daemon=True,
                                                    name="corral-broker-listener")
                    self._thread.start()
            self._ready.wait(READY_WAIT_S)  # else: polled, until it is up
        with self._cond:
            return self._reconnects + sum(self._counts.get(k, 0) for k in keys)

    def wait(self, keys: Iterable[tuple[str, str]], seen: int, timeout: float) -> None:
        """Wait up to ``timeout`` for a notification for ``keys`` after ``seen``."""
        wanted = tuple(keys)

        def moved() -> bool:
            now = self._reconnects + sum(self._counts.get(k, 0) for k in wanted)
            return now != seen or self._closed.is_set()

        with self._cond:
            self._cond.wait_for(moved, timeout)

    def close(self) -> None:
        self._closed.set()
        with self._cond:
            self._cond.notify_all()

    def _listen(self) -> None:
        from psycopg import sql

        delays = itertools.chain(RETRY_S, itertools.repeat(RETRY_S[-1]))
        while not self._closed.is_set():
            conn = None
            try:
                conn = self._connect()
                for channel in self._channels:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                with self._cond:
                    self._reconnects += 1
                    self._cond.notify_all()
                self._ready.set()
                delays = itertools.chain(RETRY_S, itertools.repeat(RETRY_S[-1]))
                while not self._closed.is_set():
                    for n in conn.notifies(timeout=POLL_S):  # each as it comes
                        key = (n.channel, n.payload)
                        with self._cond:
                            self._counts[key] = self._counts.get(key, 0) + 1
                            self._cond.notify_all()
            except Exception:  # the server went away or ended us: again, after a while
                self._ready.set()  # waiters poll meanwhile
                self._closed.wait(next(delays))
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
