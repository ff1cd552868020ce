"""The executors the conformance suite runs, one :class:`ExecutorCase` each.

To put a new executor through the suite, add one line to :data:`CASES`: a name, a factory
for a fresh instance, and the actions of its kind (:data:`CALLABLES` for Python functions,
:data:`COMMANDS` for shell command lines, or a set of its own). What the suite expects of
every executor is in ``test_executors.py``; what one cannot do by design (a command returns no
value and cannot ask to be skipped) is said by its actions, not by skipping tests.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import corral
from corral import Skip
from corral._errors import CommandFailed
from corral.executors import Executor, Work, call
from corral.executors.asyncio import AsyncExecutor
from corral.executors.dask import DaskExecutor
from corral.executors.fleet import FleetCommandExecutor, FleetExecutor
from corral.executors.process import ProcessExecutor
from corral.executors.shell import ShellExecutor
from corral.executors.thread import ThreadExecutor

# --------------------------------------------------------------------------- callables


def ok(x: int) -> int:
    return 2 * x


def boom() -> None:
    raise KeyError("boom")


def skip() -> None:
    raise Skip()


def slow(marker: str) -> None:
    Path(marker).write_text("started")
    time.sleep(60)


def flaky(counter: str) -> int:
    path = Path(counter)
    n = int(path.read_text()) if path.exists() else 0
    path.write_text(str(n + 1))
    if n < 2:
        raise RuntimeError(f"attempt {n + 1} fails")
    return n + 1


def loud(text: str) -> None:
    print(text)
    print(text + " on stderr", file=sys.stderr)


def beating(seconds: float) -> None:
    """Quiet but alive: heartbeat() calls, no output, for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        corral.heartbeat()
        time.sleep(0.02)


def silent(seconds: float) -> None:
    time.sleep(seconds)


async def aok(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def aboom() -> None:
    await asyncio.sleep(0)
    raise KeyError("boom")


async def askip() -> None:
    raise Skip()


async def aslow(marker: str) -> None:
    Path(marker).write_text("started")
    await asyncio.sleep(60)


async def aflaky(counter: str) -> int:
    return flaky(counter)


async def aloud(text: str) -> None:
    await asyncio.sleep(0)
    loud(text)


async def abeating(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        corral.heartbeat()
        await asyncio.sleep(0.02)


async def asilent(seconds: float) -> None:
    await asyncio.sleep(seconds)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Actions:
    """How to express each behaviour the suite asks for, as (action, args) in one executor's
    kind. ``None`` where the kind cannot express it (a command cannot return a value)."""

    ok: Callable[[int], tuple[Any, tuple[Any, ...]]]  # returns 2 * x (or just succeeds)
    boom: tuple[Any, tuple[Any, ...]]  # fails; ``failure`` is the error type seen
    failure: type[BaseException]
    skip: tuple[Any, tuple[Any, ...]] | None
    slow: Callable[[str], tuple[Any, tuple[Any, ...]]]  # writes the marker, then runs 60 s
    flaky: Callable[[str], tuple[Any, tuple[Any, ...]]]  # fails twice, then succeeds
    loud: Callable[[str], tuple[Any, tuple[Any, ...]]]  # prints text, and text on stderr
    beating: Callable[[float], tuple[Any, tuple[Any, ...]]] | None  # quiet, heartbeat() calls
    silent: Callable[[float], tuple[Any, tuple[Any, ...]]]  # quiet, no sign of life
    values: bool = True  # ok returns 2 * x


def _sh(cmd: str) -> tuple[Any, tuple[Any, ...]]:
    from corral._spec import ShellCommand

    return ShellCommand(cmd), ()


CALLABLES = Actions(
    ok=lambda x: (ok, (x,)),
    boom=(boom, ()),
    failure=KeyError,
    skip=(skip, ()),
    slow=lambda marker: (slow, (marker,)),
    flaky=lambda counter: (flaky, (counter,)),
    loud=lambda text: (loud, (text,)),
    beating=lambda s: (beating, (s,)),
    silent=lambda s: (silent, (s,)),
)

COROUTINES = Actions(
    ok=lambda x: (aok, (x,)),
    boom=(aboom, ()),
    failure=KeyError,
    skip=(askip, ()),
    slow=lambda marker: (aslow, (marker,)),
    flaky=lambda counter: (aflaky, (counter,)),
    loud=lambda text: (aloud, (text,)),
    beating=lambda s: (abeating, (s,)),
    silent=lambda s: (asilent, (s,)),
)

COMMANDS = Actions(
    ok=lambda x: _sh("exit 0"),
    boom=_sh("echo failing; exit 3"),
    failure=CommandFailed,
    skip=None,  # a command has no way to ask to be skipped
    slow=lambda marker: _sh(f"echo started > {marker}; exec sleep 60"),
    flaky=lambda counter: _sh(
        f"n=$(cat {counter} 2>/dev/null || echo 0); echo $((n + 1)) > {counter}; "
        f'[ "$n" -ge 2 ]'),
    loud=lambda text: _sh(f"echo '{text}'; echo '{text} on stderr' >&2"),
    beating=None,  # output is a command's only sign of life: see loud
    silent=lambda s: _sh(f"exec sleep {s}"),
    values=False,
)


# --------------------------------------------------------------------------- an example


class InlineExecutor(Executor):
    """A third-party executor written against the public contract, as small as one can be: a
    thread per attempt (no pool), abandoned when cancelled. ``call`` gives it what every
    in-process executor owes an attempt (log capture, heartbeats, outcome)."""

    name = "inline"

    def submit(self, work: Work) -> None:
        import threading

        threading.Thread(target=lambda: self.sink(work, *call(work)), daemon=True).start()


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class ExecutorCase:
    """One executor under the suite: ``make`` gives a fresh instance, run under ``name``."""

    name: str
    make: Callable[[], Executor]
    actions: Actions
    stops_work: bool = True  # a cancelled or timed-out attempt stops (else it is abandoned)

    def __str__(self) -> str:
        return self.name


def fleet(cls: type[FleetExecutor], broker: str = "redis") -> Callable[[], Executor]:
    """A fleet executor of ``cls`` over a broker (a Redis namespace, a PostgreSQL schema) that
    one real ``corral worker`` serves."""

    def make() -> Executor:
        import uuid

        from tests.helpers.brokers import shared_fleet

        from corral.fleet._coordinator import FleetSession

        return cls(FleetSession.connect(shared_fleet(broker),
                                        f"conformance-{uuid.uuid4().hex[:8]}"))

    return make


CASES = [
    ExecutorCase("thread", lambda: ThreadExecutor(max_workers=4), CALLABLES, stops_work=False),
    ExecutorCase("async", AsyncExecutor, COROUTINES),
    ExecutorCase("process", lambda: ProcessExecutor(max_workers=2), CALLABLES),
    ExecutorCase("shell", ShellExecutor, COMMANDS),
    ExecutorCase("inline", InlineExecutor, CALLABLES, stops_work=False),
    # A local cluster of its own per run (the default): stopping an attempt kills its worker.
    ExecutorCase("dask", lambda: DaskExecutor(n_workers=2), CALLABLES),
    # Through Redis (and PostgreSQL) to a real `corral worker` (its thread and shell
    # executors). What a worker stops runs in the worker's process tree, not this one's:
    # tests/integration/test_fleet.py checks that a cancelled command stops there.
    ExecutorCase("fleet", fleet(FleetExecutor), CALLABLES, stops_work=False),
    ExecutorCase("fleet-shell", fleet(FleetCommandExecutor), COMMANDS, stops_work=False),
    ExecutorCase("fleet-postgres", fleet(FleetExecutor, "postgres"), CALLABLES,
                 stops_work=False),
]
