"""Tasks the fleet tests send to real workers: in a module the workers import by name
(``tests.helpers.fleet_tasks``, the repository being on their path)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def ran(journal: str, task: str, seconds: float) -> str:
    """Note which process ran ``task`` (at its start), then work for ``seconds``."""
    with open(journal, "a") as f:
        f.write(f"{task} {os.getpid()}\n")
    time.sleep(seconds)
    return task


def starts(journal: Path) -> list[tuple[str, int]]:
    """(task, pid) of each start :func:`ran` noted, in order."""
    if not journal.exists():
        return []
    return [(t, int(p)) for t, p in (line.split() for line in journal.read_text().splitlines())]


def kill_my_worker() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def big() -> str:
    return "x" * 50_000


def limited_calls(name: str, calls: int) -> int:
    """Take the run's rate limit ``name`` ``calls`` times (corral.limit, on a worker)."""
    import corral

    for _ in range(calls):
        with corral.limit(name):
            pass
    return calls


def broken(journal: str, task: str) -> None:
    """Note that ``task`` ran, then fail: a service that is down."""
    with open(journal, "a") as f:
        f.write(f"{task} {os.getpid()}\n")
    raise ConnectionError("the service is down")


async def limited_calls_async(name: str, calls: int) -> int:
    """:func:`limited_calls` in a coroutine (``async with corral.limit``)."""
    import corral

    for _ in range(calls):
        async with corral.limit(name):
            pass
    return calls


def overlapping(journal: str, task: str, seconds: float) -> str:
    """Note ``+ task`` at the start and ``- task`` at the end (around ``seconds`` of work):
    :func:`most_at_once` reads how many ran at once from the order of the lines alone."""
    with open(journal, "a") as f:
        f.write(f"+ {task}\n")
    time.sleep(seconds)
    with open(journal, "a") as f:
        f.write(f"- {task}\n")
    return task


def most_at_once(lines: list[str]) -> int:
    """The most tasks :func:`overlapping` had started and not ended at once, in ``lines``."""
    now = most = 0
    for line in lines:
        if line.startswith("+ "):
            now += 1
            most = max(most, now)
        elif line.startswith("- "):
            now -= 1
    return most


def held(journal: str, task: str, release: str) -> str:
    """Note which process runs ``task``, then hold its slot until the file ``release`` exists
    (at most 5 minutes: a hang guard)."""
    with open(journal, "a") as f:
        f.write(f"{task} {os.getpid()}\n")
    deadline = time.monotonic() + 300
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
    return task
