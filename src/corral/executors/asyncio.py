"""Async executor: coroutine functions run as tasks on the run loop itself.

No thread, no pickling: the cheapest way to run a task, and the right one for I/O-bound work
(HTTP calls, database queries) written with ``async def``. A timeout or a cancelled run cancels
the asyncio task, so the coroutine sees ``CancelledError`` at its next ``await``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from corral._errors import Skip
from corral.executors._base import CANCELLED, ERROR, OK, SKIP, Executor, Work

__all__ = ["AsyncExecutor"]


class AsyncExecutor(Executor):
    """Runs coroutine functions (and sync ones, inline, if asked to) on the run loop."""

    name = "async"

    def __init__(self) -> None:
        super().__init__()
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, work: Work) -> None:
        task = asyncio.get_running_loop().create_task(self._run(work))
        work.handle = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, work: Work) -> None:
        status: int
        payload: Any
        try:
            result = work.fn(*work.args, **work.kwargs)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            status, payload = OK, result
        except Skip:
            status, payload = SKIP, None
        except asyncio.CancelledError:
            status, payload = CANCELLED, None
        except BaseException as exc:  # the task's own failure
            status, payload = ERROR, exc
        self.sink(work, status, payload)

    def cancel(self, work: Work) -> None:
        task = work.handle
        if task is not None:
            task.cancel()

    async def shutdown(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
