"""dask: the threaded scheduler (``dask.threaded.get``) and dask.distributed.

The graph dict is built in ``setup`` (``{id: (fn, *args, *dep_ids)}``: a dependency is an
argument naming the upstream key, whose value the task receives and ignores); each repetition
times one ``get`` of the sinks, dask's own ordering included.

dask.distributed runs a ``LocalCluster`` started once in ``setup`` (not timed): for noop and
sleep workloads ``processes=False`` with one worker of ``concurrency`` threads (scheduler and
worker in this process, as close to corral's single-process setting as distributed gets); for
the CPU workload ``concurrency`` worker processes of one thread each, since threads would share
the GIL.
"""

from __future__ import annotations

import logging
from typing import Any

from bench import tasks
from bench.runners._base import BenchRunner, Skip

__all__ = ["DaskDistributed", "DaskThreaded"]


def dask_graph(runner: BenchRunner) -> dict[str, tuple[Any, ...]]:
    wl = runner.wl
    if wl.kind == "noop":
        return {t: (tasks.noop, *ds) for t, ds in zip(wl.ids, wl.deps, strict=True)}
    if wl.kind == "sleep":
        return {
            t: (tasks.sleep, d, *ds) for t, d, ds in zip(wl.ids, wl.durations, wl.deps, strict=True)
        }
    if wl.kind == "cpu":
        return {
            t: (tasks.busy_loop, wl.info.cpu_iters, *ds)
            for t, ds in zip(wl.ids, wl.deps, strict=True)
        }
    raise Skip(f"no {wl.kind!r} workload in this runner")


class DaskThreaded(BenchRunner):
    def setup(self) -> None:
        import dask.threaded

        if self.wl.kind == "cpu":
            raise Skip("threads share the GIL: no speed-up possible on CPU work")
        self.get = dask.threaded.get
        self.dsk = dask_graph(self)
        self.keys = self.wl.sinks()

    def run_once(self) -> None:
        self.get(self.dsk, self.keys, num_workers=self.wl.concurrency)


class DaskDistributed(BenchRunner):
    def setup(self) -> None:
        from distributed import Client, LocalCluster

        self.dsk = dask_graph(self)
        self.keys = self.wl.sinks()
        c = self.wl.concurrency
        processes = self.wl.kind == "cpu"
        self.cluster = LocalCluster(  # type: ignore[no-untyped-call]
            processes=processes,
            n_workers=c if processes else 1,
            threads_per_worker=1 if processes else c,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self.client = Client(self.cluster)  # type: ignore[no-untyped-call]

    def run_once(self) -> None:
        self.client.get(self.dsk, self.keys)  # type: ignore[no-untyped-call]

    def teardown(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]
        self.cluster.close()
