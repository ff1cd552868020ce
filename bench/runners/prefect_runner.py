"""prefect 3: one flow on a ``ThreadPoolTaskRunner`` as wide as the workload's concurrency.

Tasks are submitted in topological order with ``wait_for=`` their upstream futures; the flow
waits for the sinks. Each repetition times one flow call (prefect's own flow-run bookkeeping
included: that is what a user pays). Not installed by the bench extra; skipped when missing.
"""

from __future__ import annotations

from typing import Any

from bench import tasks
from bench.runners._base import BenchRunner, Skip

__all__ = ["Prefect"]


class Prefect(BenchRunner):
    def setup(self) -> None:
        from prefect import flow, task
        from prefect.futures import wait
        from prefect.task_runners import ThreadPoolTaskRunner

        wl = self.wl
        if wl.kind == "noop":
            fn: Any = tasks.noop
            args: list[tuple[Any, ...]] = [()] * len(wl.ids)
        elif wl.kind == "sleep":
            fn, args = tasks.sleep, [(d,) for d in wl.durations]
        else:
            raise Skip(f"no {wl.kind!r} workload in this runner (threads only)")
        ptask = task(fn, name=fn.__name__, persist_result=False)
        order = wl.topological()
        sinks = wl.sinks()

        @flow(  # type: ignore[untyped-decorator]
            task_runner=ThreadPoolTaskRunner(max_workers=wl.concurrency), persist_result=False
        )
        def bench_flow() -> None:
            futures: dict[str, Any] = {}
            for i in order:
                futures[wl.ids[i]] = ptask.submit(
                    *args[i], wait_for=[futures[d] for d in wl.deps[i]]
                )
            wait([futures[s] for s in sinks])

        self.flow = bench_flow

    def run_once(self) -> None:
        self.flow()
