"""Asking the kernel for a signal when this process's parent dies (Linux ``PR_SET_PDEATHSIG``):
the one call behind process workers dying with corral and fleet workers with their pool.

It fires when the *thread* that started the process ends, not the parent process itself, so
callers start such children from a thread that lives as long as the parent (its main one).
"""

from __future__ import annotations

import sys

__all__ = ["ask_death_signal"]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def ask_death_signal(sig: int) -> bool:
    """Have ``sig`` sent to this process when its parent dies; False where it cannot be
    asked for (not Linux, no prctl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return int(ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig),
                                                             0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
