"""Executors: the ways corral runs a task. Each plugs into :class:`Executor` (``_base``).

==========  ==========================================================
``async``   coroutine functions on the run loop (:mod:`.asyncio`)
``thread``  sync functions on a thread pool (:mod:`.thread`)
``process`` CPU-bound functions in worker processes (:mod:`.process`)
``shell``   shell commands in their own process groups (:mod:`.shell`)
``dask``    callables on a Dask cluster (:mod:`.dask`; the ``dask`` extra)
(fleet)     any of these on ``corral worker``s via a broker (:mod:`.fleet`;
            ``corral run --broker``, the ``redis`` extra)
==========  ==========================================================

Modules load on first use, so ``import corral`` pulls in none of them. A task names its
executor (``executor: NAME``); names are found in the run's own executors, then these
built-ins, then the ``corral.executors`` entry-point group (:mod:`._registry`). To write one:
subclass :class:`Executor`, implement :meth:`~Executor.submit`, report each attempt's
:class:`Outcome` to the sink; see :mod:`._base` for the contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

from corral._lazy import lazy_attributes as _lazy_attributes
from corral.executors._base import (
    CANCELLED,
    ERROR,
    OK,
    SKIP,
    ActionKind,
    CompletionQueue,
    Executor,
    ExecutorSettings,
    Outcome,
    WatchedWork,
    Work,
    call,
)
from corral.executors._registry import ENTRY_POINT_GROUP, UnknownExecutor, known_names

if _TYPE_CHECKING:
    from corral.executors.asyncio import AsyncExecutor
    from corral.executors.dask import DaskExecutor
    from corral.executors.fleet import FleetExecutor
    from corral.executors.process import ProcessExecutor
    from corral.executors.shell import ShellExecutor
    from corral.executors.thread import ThreadExecutor

__all__ = [
    "CANCELLED",
    "ENTRY_POINT_GROUP",
    "ERROR",
    "OK",
    "SKIP",
    "ActionKind",
    "AsyncExecutor",
    "CompletionQueue",
    "DaskExecutor",
    "Executor",
    "ExecutorSettings",
    "FleetExecutor",
    "Outcome",
    "ProcessExecutor",
    "ShellExecutor",
    "ThreadExecutor",
    "UnknownExecutor",
    "WatchedWork",
    "Work",
    "call",
    "known_names",
]

_LAZY = {
    "AsyncExecutor": "corral.executors.asyncio",
    "DaskExecutor": "corral.executors.dask",
    "FleetExecutor": "corral.executors.fleet",
    "ProcessExecutor": "corral.executors.process",
    "ShellExecutor": "corral.executors.shell",
    "ThreadExecutor": "corral.executors.thread",
}


__getattr__ = _lazy_attributes("corral.executors", _LAZY)
