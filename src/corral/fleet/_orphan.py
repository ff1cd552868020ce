"""No worker outlives its pool: how a pool's worker notices that its supervisor died.

A pool's supervisor killed with SIGKILL (or by the OOM killer) cannot stop its workers, and
they run in sessions of their own (a terminal's Ctrl-C reaches them through the pool only),
so nothing else would. Two guards, each enough alone::

    at start (Linux): prctl(PR_SET_PDEATHSIG, SIGTERM) ── the pool dies ──> the kernel sends
        SIGTERM: the worker's graceful stop (finish within --grace, hand back the rest)
    every beat (anywhere): os.getppid() != the pool's pid ──> the same stop

The death signal fires when the *thread* that started the worker ends, not the process: the
pool asks for it only when it starts workers from its main thread (:func:`spawned_safely`).
Between the worker's start and its prctl call the pool may already have died: the worker
looks at its parent right after, and stops at once if it is not the pool. A worker started
with SIGTERM ignored keeps it ignored (as every corral entry point does): the death signal
then does nothing, and the watchdog stops it at its next beat.
"""

from __future__ import annotations

import os
import signal
import threading

from corral._parent_death import ask_death_signal

__all__ = ["die_with_parent", "orphaned", "spawned_safely"]

def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send this process ``sig`` when its parent dies; False where it
    cannot (not Linux, no prctl)."""
    return ask_death_signal(sig)


def orphaned(supervisor: int | None) -> bool:
    """Whether this process's parent is no longer ``supervisor`` (None: it has none to lose):
    the pool died, and we were handed to init or a subreaper."""
    return supervisor is not None and os.getppid() != supervisor


def spawned_safely() -> bool:
    """Whether a child started now may ask for a death signal: only from the main thread,
    which lives as long as the process (another thread's end would signal the child)."""
    return threading.current_thread() is threading.main_thread()
