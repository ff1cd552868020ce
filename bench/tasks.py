"""Task bodies every runner calls. Kept import-light: process workers unpickle them by name."""

from __future__ import annotations

import asyncio
import os
import time

__all__ = ["anoop", "asleep", "busy_loop", "journal_sleep", "noop", "sleep", "sleep_here"]


def noop(*upstream: object) -> None:
    """A zero-duration task; ``upstream`` takes the values some engines pass along edges."""


async def anoop(*upstream: object) -> None:
    """The ``async def`` twin of :func:`noop`."""


def sleep(seconds: float, *upstream: object) -> None:
    time.sleep(seconds)


def sleep_here(seconds: float) -> int:
    """Sleep, then say which process did (a fleet benchmark counts each worker's share)."""
    time.sleep(seconds)
    return os.getpid()


def journal_sleep(journal: str, task: str, seconds: float) -> None:
    """Note ``task``, this process and the wall clock in ``journal`` as the attempt starts,
    then sleep (a fleet benchmark sees from it which worker started what, and when)."""
    with open(journal, "a") as f:
        f.write(f"{task} {os.getpid()} {time.time():.6f}\n")
    time.sleep(seconds)


async def asleep(seconds: float, *upstream: object) -> None:
    await asyncio.sleep(seconds)


def busy_loop(n: int, *upstream: object) -> int:
    """The w5 task body, the same loop as ``gen_dags.py`` calibrated (~0.25 s for 4.3M)."""
    x = 0
    for i in range(n):
        x = (x + i) & 0xFFFFFFFF
    return x
