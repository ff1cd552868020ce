"""ray: one remote function, tasks submitted in topological order with upstream refs as args.

``ray.init`` (``num_cpus`` = the workload's concurrency) happens in ``setup``, not timed.
Not installed by the bench extra; the runner is skipped when ``ray`` is missing.
"""

from __future__ import annotations

from typing import Any

from bench import tasks
from bench.runners._base import BenchRunner, Skip

__all__ = ["Ray"]


class Ray(BenchRunner):
    def setup(self) -> None:
        import ray

        wl = self.wl
        if wl.kind == "noop":
            fn: Any = tasks.noop
            self.args: list[tuple[Any, ...]] = [()] * len(wl.ids)
        elif wl.kind == "sleep":
            fn, self.args = tasks.sleep, [(d,) for d in wl.durations]
        elif wl.kind == "cpu":
            fn, self.args = tasks.busy_loop, [(wl.info.cpu_iters,)] * len(wl.ids)
        else:
            raise Skip(f"no {wl.kind!r} workload in this runner")
        ray.init(
            num_cpus=wl.concurrency,
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
        )
        self.ray = ray
        self.remote = ray.remote(fn)
        self.order = wl.topological()
        self.sinks = wl.sinks()

    def run_once(self) -> None:
        wl = self.wl
        refs: dict[str, Any] = {}
        for i in self.order:
            refs[wl.ids[i]] = self.remote.remote(*self.args[i], *[refs[d] for d in wl.deps[i]])
        self.ray.get([refs[s] for s in self.sinks])

    def teardown(self) -> None:
        self.ray.shutdown()
