"""Thread executor: synchronous functions on a pool of daemon threads.

Workers take :class:`Work` from one queue and hand outcomes straight to the run loop's sink,
which batches them, so a burst of short tasks costs one loop wake-up rather than one per task
(``loop.run_in_executor`` would allocate and schedule a future per task). The pool grows by
one thread per submission until it is ``max_workers`` wide — the run loop never has more
tasks in flight than its concurrency, which is the pool's width — so submitting is a queue
put and nothing else.

A Python thread cannot be killed. When an attempt times out or the run is cancelled, the run
loop records the outcome at once and this executor *abandons* the thread: it finishes on its
own, its result is ignored, and a fresh thread replaces it so the pool keeps its width.
Threads are daemons, so an abandoned one never keeps the process alive at exit. That is also
what happens to an attempt failed as hung (no sign of life for its ``heartbeat``): the thread
is abandoned, and its ``print()`` and :func:`corral.heartbeat` calls no longer count.
"""

from __future__ import annotations

import queue
import threading
from typing import Self

from corral.executors._base import CANCELLED, Executor, ExecutorSettings, Sink, Work, call

__all__ = ["ThreadExecutor"]

RUNNING = "running"


class ThreadExecutor(Executor):
    """Runs sync callables on up to ``max_workers`` threads (started as needed)."""

    name = "thread"

    def __init__(self, max_workers: int = 8) -> None:
        super().__init__()
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, not {max_workers}")
        self.max_workers = max_workers
        self._queue: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._width = 0  # threads that are not abandoned
        self._lock = threading.Lock()

    @classmethod
    def for_run(cls, settings: ExecutorSettings) -> Self:
        # As wide as the run: the run never has more attempts in flight than its concurrency.
        return cls(max_workers=settings.concurrency)

    def submit(self, work: Work) -> None:
        self._queue.put(work)
        if self._width < self.max_workers:
            self._spawn()

    def _spawn(self) -> None:
        t = threading.Thread(
            target=_worker,
            args=(self._queue, self.sink, self._lock),
            name=f"corral-thread-{len(self._threads)}",
            daemon=True,
        )
        self._threads.append(t)
        self._width += 1
        t.start()

    def cancel(self, work: Work) -> None:
        # Not picked up yet: the worker will skip it. Running: abandon that thread.
        with self._lock:
            running = work.handle == RUNNING
            work.handle = CANCELLED
        if running:
            self._width -= 1
            self._spawn()

    async def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        self._threads.clear()
        self._width = 0


def _worker(work_queue: queue.SimpleQueue[Work | None], sink: Sink, lock: threading.Lock) -> None:
    get = work_queue.get
    while True:
        work = get()
        if work is None:
            return
        with lock:
            cancelled = work.handle == CANCELLED
            if not cancelled:
                work.handle = RUNNING
        if cancelled:
            continue
        status, payload = call(work)
        with lock:
            abandoned = work.handle == CANCELLED
            work.handle = None
        if abandoned:
            return  # the pool already replaced this thread
        sink(work, status, payload)
