"""``corral.context()``: a key-value mapping shared by the tasks of one run.

::

    ctx = corral.context()
    ctx["plan"] = ["fetch", "summarise"]      # any task of the run sees it from now on
    steps = corral.context().get("plan", [])

Tasks read and write it as a ``dict`` (``MutableMapping``); every operation holds a lock, so
threads and coroutines of the run may use it at once (a read-modify-write of one key is two
operations: use :meth:`RunContext.update_with` to make it one). Values must be JSON data
(text, numbers, booleans, None, lists, mappings with text keys): the context is **persisted
with the run** — each change reaches the store no later than the outcome of the task that made
it (a ``context`` event) — **shown by** ``corral show`` and **restored on resume**.

Only tasks that run in the run's own process see it: the ``async`` and ``thread`` executors.
A task in a ``process``, ``shell`` or remote executor has no context (``corral.context()``
raises :class:`~corral._errors.CorralError` saying so): pass values as arguments and results.

How a task finds its run: the runner sets :data:`current` around each dispatch (an async task
inherits it; the thread executor's threads start in the dispatching context), and, for code
outside such a context, the one run of this process that is running (an error when there are
several).
"""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from corral._errors import CorralError

__all__ = ["RunContext", "call_in", "context", "current", "register", "unregister"]


class RunContext(MutableMapping[str, Any]):
    """The context of one run. ``changes()`` hands the run loop what changed since it last
    asked (set keys with their values, deleted keys), for the store."""

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {}
        self._dirty: set[str] = set()
        for key, value in (initial or {}).items():
            self[key] = value

    def __getitem__(self, key: str) -> Any:
        with self._lock:
            return _copy(self._data[key])

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"corral.context() keys are text, not {type(key).__name__}")
        copied = _copy(value, key)
        with self._lock:
            self._data[key] = copied
            self._dirty.add(key)

    def __delitem__(self, key: str) -> None:
        with self._lock:
            del self._data[key]
            self._dirty.add(key)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._data))

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __repr__(self) -> str:
        return f"RunContext({self.snapshot()!r})"

    def update_with(self, key: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """Set ``key`` to ``fn(its value, or default)`` atomically; return the new value
        (``ctx.update_with("seen", lambda n: n + 1, 0)``)."""
        with self._lock:
            new = _copy(fn(_copy(self._data.get(key, default))), key)
            self._data[key] = new
            self._dirty.add(key)
            return _copy(new)

    def snapshot(self) -> dict[str, Any]:
        """A copy of everything in it."""
        with self._lock:
            return {k: _copy(v) for k, v in self._data.items()}

    def changes(self) -> tuple[dict[str, Any], list[str]]:
        """What changed since the last call: ``(set keys and their values, deleted keys)``."""
        with self._lock:
            if not self._dirty:
                return {}, []
            dirty, self._dirty = self._dirty, set()
            data = self._data
            return ({k: _copy(data[k]) for k in sorted(dirty) if k in data},
                    sorted(k for k in dirty if k not in data))


def _copy(value: Any, key: str | None = None) -> Any:
    """A deep copy through JSON: what is stored is what tasks read, and a task that mutates
    what it read changes nothing until it sets it again."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        where = f"[{key!r}]" if key is not None else ""
        raise TypeError(f"corral.context(){where} takes JSON data (text, numbers, booleans, "
                        f"None, lists, mappings with text keys), not {type(value).__name__}: "
                        f"{exc}") from None


current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "corral_context", default=None)
"""The context of the run whose task runs in this context; set by the runner around dispatch."""

_lock = threading.Lock()
_running: list[RunContext] = []


def call_in(ctx: RunContext, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with ``ctx`` as the context: how a thread task finds its run."""
    token = current.set(ctx)
    try:
        return fn(*args, **kwargs)
    finally:
        current.reset(token)


def register(ctx: RunContext) -> None:
    with _lock:
        _running.append(ctx)


def unregister(ctx: RunContext) -> None:
    with _lock:
        if ctx in _running:
            _running.remove(ctx)


def context() -> RunContext:
    """The context of the run the calling task belongs to (see the module's note)."""
    ctx = current.get()
    if ctx is not None:
        return ctx
    with _lock:
        running = list(_running)
    if len(running) == 1:
        return running[0]
    if running:
        raise CorralError("corral.context(): several runs are running in this process and "
                          "this code is not inside a task of one of them")
    raise CorralError("corral.context(): no corral run is running in this process; it works "
                      "in tasks that run in the run's process (the async and thread executors), "
                      "not in process or shell tasks")
