"""``corral.limit``: a task takes one of its run's rate limits for a call inside it.

::

    with corral.limit("api"):          # blocks until the run's GCRA state allows one more
        requests.get(...)
    async with corral.limit("llm"):    # the same, sleeping with asyncio
        await client.chat(...)

The state is the run's own (its :class:`corral._limits.RateState`, shared with the scheduler's
admission of tasks that declare ``rate_limit``), so a task's calls and the tasks themselves
count against the same limit. A run registers its state here while it runs; ``limit`` finds
the innermost running run that declares the name. Only tasks in the run's process see it
(the async and thread executors): a task in a process or shell executor has no run here, and
``limit`` says so.

On a ``corral worker`` there is no run: the worker sets :data:`current` around each attempt
(a thread task through :func:`call_with`), to the limits of the attempt's run in its broker
(:mod:`corral.fleet.limits_redis`, :mod:`corral.fleet.limits_postgres`), which that run's
coordinator shares too.

The limit is taken on entry; leaving the block gives nothing back (GCRA counts starts).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from corral._errors import CorralError
from corral._limits import RateState

__all__ = ["call_with", "current", "limit", "register", "unregister"]

_Entry = tuple[frozenset[str], RateState, Callable[[], float]]
_lock = threading.Lock()
_running: list[_Entry] = []

Resolver = Callable[[str], tuple[RateState, Callable[[], float]]]
current: contextvars.ContextVar[Resolver | None] = contextvars.ContextVar(
    "corral_limits", default=None)
"""How ``limit(name)`` finds its state in the attempt running in this context (a worker's);
it raises :class:`CorralError` for a name the attempt's run does not declare."""


def call_with(resolve: Resolver, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with ``resolve`` as :data:`current`: a thread task's limits."""
    token = current.set(resolve)
    try:
        return fn(*args, **kwargs)
    finally:
        current.reset(token)


def register(names: Iterable[str], rates: RateState, clock: Callable[[], float]) -> _Entry:
    """A run's limits (their names and state), and its clock (the scheduler's ``now``),
    while it runs."""
    entry = (frozenset(names), rates, clock)
    with _lock:
        _running.append(entry)
    return entry


def unregister(entry: _Entry) -> None:
    with _lock:
        if entry in _running:
            _running.remove(entry)


def _find(name: str) -> tuple[RateState, Callable[[], float]]:
    resolve = current.get()
    if resolve is not None:
        return resolve(name)
    with _lock:
        for names, rates, clock in reversed(_running):
            if name in names:
                return rates, clock
        declared = sorted({n for names, _, _ in _running for n in names})
    if declared:
        raise CorralError(f"corral.limit({name!r}): the running run declares no rate limit "
                          f"{name!r} (it has {', '.join(declared)})")
    raise CorralError(f"corral.limit({name!r}): no corral run in this process declares rate "
                      f"limit {name!r}; it works in tasks that run in the run's process "
                      "(the async and thread executors), with the limit declared in "
                      "rate_limits")


class limit:  # lower case: used like a function, with corral.limit("api"): ...
    """Block until the run's rate limit ``name`` allows one more call; use with ``with`` or
    ``async with``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop in this thread: blocking is fine
        else:  # a coroutine: sleeping here would stop its whole event loop
            raise CorralError(f"corral.limit({self.name!r}) in a coroutine: use "
                              f"'async with corral.limit({self.name!r}):', which does not "
                              "block the event loop")
        rates, clock = _find(self.name)
        names, due = (self.name,), None
        while (retry_at := rates.try_acquire(names, clock(), due)) is not None:
            time.sleep(max(0.0, retry_at - clock()))
            due = retry_at  # a late wake-up counts at this time: no drift (gcra's due)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    async def __aenter__(self) -> None:
        rates, clock = _find(self.name)
        names, due = (self.name,), None
        while (retry_at := rates.try_acquire(names, clock(), due)) is not None:
            await asyncio.sleep(max(0.0, retry_at - clock()))
            due = retry_at

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None
