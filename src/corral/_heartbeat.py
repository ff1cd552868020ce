"""Heartbeats: a running task's way of saying "still alive" without printing anything.

A task with the ``heartbeat`` option is failed as hung (:class:`~corral._errors.TaskHung`) when
it shows no sign of life for that many seconds. Output is a sign of life; so is a call to
:func:`heartbeat`, for work that is busy but quiet. How the call reaches the run loop::

    thread / async task ──heartbeat()──> current ──> work.beat() ──> Scheduler.beat(i, n, now)
    process task ──heartbeat()──> current ──> watcher ──BEAT message──> parent ──> work.beat()

``current`` is a context variable the executor sets around a watched attempt (in a process
worker, to its watcher, which coalesces beats into at most one message per short gap).

Cheap enough to call in a tight loop: outside a task, or in a task without a heartbeat, it is
one context-variable lookup; in a watched task, a few calls and a store, no I/O. Threads the task
starts itself do not inherit the context: call it from the task's own thread or coroutine.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

__all__ = ["current", "heartbeat"]

current: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "corral_heartbeat", default=None
)
"""The beat of the attempt running in this context; set by executors for watched attempts."""


def heartbeat() -> None:
    """Tell corral that the calling task is alive: its ``heartbeat`` clock starts over.

    Call it from the task's own code (its thread, its coroutine, or its process). Outside a
    running task, or in a task without a ``heartbeat`` option, it does nothing.
    """
    beat = current.get()
    if beat is not None:
        beat()
