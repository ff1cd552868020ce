"""Async executor: coroutine functions run on the run loop itself.

No thread, no pickling: the cheapest way to run a task, and the right one for I/O-bound work
(HTTP calls, database queries) written with ``async def``.

Coroutines start *eagerly*: :meth:`AsyncExecutor.submit` runs the first step at once, as
Python 3.12's eager task factory does. One that finishes without suspending (a cache hit, a
no-op) completes right there, with no :class:`asyncio.Task` at all; one that suspends becomes
a task that carries on from where it stopped. A timeout, a hang (no sign of life for the
task's ``heartbeat``) or a cancelled run cancels that task, so the coroutine sees
``CancelledError`` at its ``await``.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any

from corral import _heartbeat
from corral._capture import TaskOutput, current
from corral._errors import Skip
from corral.executors._base import CANCELLED, ERROR, OK, SKIP, Executor, Work

__all__ = ["AsyncExecutor"]


class AsyncExecutor(Executor):
    """Runs coroutine functions (and sync callables, inline) on the run loop."""

    name = "async"

    def __init__(self) -> None:
        super().__init__()
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, work: Work) -> None:
        beat = work.beat
        if work.log_file is None and beat is None:
            self._start(work)
            return
        # print() of this attempt goes to its log and is a sign of life, and corral.heartbeat()
        # beats for it: set for the eager step here, and copied into the task's own context
        # if it goes on as a task.
        output = TaskOutput(work.log_file, beat)
        token = current.set(output)
        beat_token = None if beat is None else _heartbeat.current.set(beat)
        try:
            if not self._start(work):
                output.close()
        finally:
            if beat_token is not None:
                _heartbeat.current.reset(beat_token)
            current.reset(token)

    def _start(self, work: Work) -> bool:
        """Run the first step; True if the attempt goes on as a task."""
        try:
            result = work.fn(*work.args, **work.kwargs)
            if not asyncio.iscoroutine(result):
                if isinstance(result, asyncio.Future):
                    self._follow(work, _await(result))
                    return True
                self.sink(work, OK, result)
                return False
            coro: Coroutine[Any, Any, Any] = result
            yielded = coro.send(None)  # the first step, eagerly
        except StopIteration as stop:  # finished without ever suspending
            self.sink(work, OK, stop.value)
        except Skip:
            self.sink(work, SKIP, None)
        except BaseException as exc:  # the task's own failure
            self.sink(work, ERROR, exc)
        else:
            self._follow(work, _resume(coro, yielded))
            return True
        return False

    def _follow(self, work: Work, rest: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._finish(work, rest))
        work.handle = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, work: Work, rest: Any) -> None:
        status: int
        payload: Any
        try:
            status, payload = OK, await rest
        except Skip:
            status, payload = SKIP, None
        except asyncio.CancelledError:
            status, payload = CANCELLED, None
        except BaseException as exc:  # the task's own failure
            status, payload = ERROR, exc
        output = current.get()
        if output is not None:
            output.close()
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


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, None, Any]:
    """Carry on a coroutine that already ran its first step and suspended on ``yielded``.

    The enclosing task waits on what the coroutine yields exactly as it would have had it run
    the coroutine itself: a task resumes with ``send(None)``, or ``throw(exc)`` to cancel.
    """
    while True:
        try:
            yield yielded
        except BaseException as exc:  # cancellation: hand it to the coroutine
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(None)
            except StopIteration as stop:
                return stop.value


async def _await(future: asyncio.Future[Any]) -> Any:
    return await future
