"""The floor: minimal Kahn's-algorithm loops, the reference every engine is measured against.

No validation, no retries, no events: index the tasks, count unfinished dependencies, hand
ready tasks to a pool and release dependents as tasks finish. They are written to be as fast
as that loop can honestly be, not to be handicapped:

- ``floor-thread`` / ``floor-process``: a ``concurrent.futures`` pool (as wide as the
  workload's concurrency); completions come back through ``add_done_callback`` onto one
  ``SimpleQueue`` that the main thread drains (``futures.wait`` would rescan every pending
  future on each call, which is quadratic on wide DAGs).
- ``floor-async``: ``concurrency`` worker coroutines pulling from one ``asyncio.Queue``.
- ``serial``: the tasks called one after another in topological order, in-process (the
  zero-engine reference, and the baseline for the CPU workload's speed-up).
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from bench import tasks
from bench.runners._base import BenchRunner, Skip

__all__ = ["FloorAsync", "FloorProcess", "FloorThread", "Serial"]


def _sync_body(runner: BenchRunner) -> tuple[Callable[..., Any], list[tuple[Any, ...]]]:
    wl = runner.wl
    if wl.kind == "noop":
        return tasks.noop, [()] * len(wl.ids)
    if wl.kind == "sleep":
        return tasks.sleep, [(d,) for d in wl.durations]
    if wl.kind == "cpu":
        return tasks.busy_loop, [(wl.info.cpu_iters,)] * len(wl.ids)
    raise Skip(f"no {wl.kind!r} workload in this runner")


def _index(ids: list[str], deps: list[list[str]]) -> tuple[list[int], list[list[int]]]:
    """Unfinished-dependency counts and dependents lists, by integer index."""
    index = {t: i for i, t in enumerate(ids)}
    waiting = [len(ds) for ds in deps]
    dependents: list[list[int]] = [[] for _ in ids]
    for i, ds in enumerate(deps):
        for d in ds:
            dependents[index[d]].append(i)
    return waiting, dependents


def kahn_pool(
    pool: Executor,
    ids: list[str],
    deps: list[list[str]],
    fn: Callable[..., Any],
    args: list[tuple[Any, ...]],
) -> None:
    """Run the DAG on ``pool``; raises the first task error."""
    waiting, dependents = _index(ids, deps)
    done: queue.SimpleQueue[tuple[int, Future[Any]]] = queue.SimpleQueue()

    def submit(i: int) -> None:
        pool.submit(fn, *args[i]).add_done_callback(lambda f: done.put((i, f)))

    for i, w in enumerate(waiting):
        if w == 0:
            submit(i)
    for _ in range(len(ids)):
        i, future = done.get()
        future.result()
        for j in dependents[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                submit(j)


async def kahn_async(
    ids: list[str],
    deps: list[list[str]],
    fn: Callable[..., Any],
    args: list[tuple[Any, ...]],
    concurrency: int,
) -> None:
    """Run the DAG with ``concurrency`` worker coroutines."""
    waiting, dependents = _index(ids, deps)
    ready: asyncio.Queue[int] = asyncio.Queue()
    for i, w in enumerate(waiting):
        if w == 0:
            ready.put_nowait(i)
    remaining = len(ids)

    async def worker() -> None:
        nonlocal remaining
        while True:
            i = await ready.get()
            if i < 0:
                return
            await fn(*args[i])
            remaining -= 1
            for j in dependents[i]:
                waiting[j] -= 1
                if waiting[j] == 0:
                    ready.put_nowait(j)
            if remaining == 0:
                for _ in range(concurrency):
                    ready.put_nowait(-1)

    if remaining:
        await asyncio.gather(*(worker() for _ in range(concurrency)))


class FloorThread(BenchRunner):
    pool_class: Callable[..., Executor] = ThreadPoolExecutor

    def setup(self) -> None:
        self.fn, self.args = _sync_body(self)

    def run_once(self) -> None:
        wl = self.wl
        with self.pool_class(max_workers=wl.concurrency) as pool:
            kahn_pool(pool, wl.ids, wl.deps, self.fn, self.args)


class FloorProcess(FloorThread):
    pool_class = ProcessPoolExecutor


class FloorAsync(BenchRunner):
    fn: Callable[..., Awaitable[None]]
    args: list[tuple[Any, ...]]

    def setup(self) -> None:
        wl = self.wl
        if wl.kind == "noop":
            self.fn, self.args = tasks.anoop, [()] * len(wl.ids)
        elif wl.kind == "sleep":
            self.fn, self.args = tasks.asleep, [(d,) for d in wl.durations]
        else:
            raise Skip(f"no {wl.kind!r} workload in this runner")

    def run_once(self) -> None:
        wl = self.wl
        asyncio.run(kahn_async(wl.ids, wl.deps, self.fn, self.args, wl.concurrency))


class Serial(BenchRunner):
    def setup(self) -> None:
        self.fn, self.args = _sync_body(self)
        self.order = self.wl.topological()

    def run_once(self) -> None:
        fn, args = self.fn, self.args
        for i in self.order:
            fn(*args[i])
