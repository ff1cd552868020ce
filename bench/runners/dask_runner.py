"""dask: the threaded scheduler (``dask.threaded.get``) and dask.distributed.

The graph dict is built in ``setup`` (``{id: (fn, *args, *dep_ids)}``: a dependency is an
argument naming the upstream key, whose value the task receives and ignores); each repetition
times one ``get`` of the sinks, dask's own ordering included.

dask.distributed runs a ``LocalCluster`` started once in ``setup`` (not timed): for noop and
sleep workloads ``processes=False`` with one worker of ``concurrency`` threads (scheduler and
worker in this process, as close to corral's single-process setting as distributed gets); for
the CPU workload ``concurrency`` worker processes of one thread each, since threads would share
the GIL.

``corral-dask`` is corral with every task on its dask executor, given the address of the same
kind of cluster (started untimed in ``setup``): each repetition times corral's whole run, its
client connecting to the scheduler included, with Dask running each attempt. Set beside
``dask-distributed`` on the same cluster, the difference is what corral's scheduling and its
per-attempt protocol (an acknowledged start, one future per attempt) cost over Dask's own graph
scheduling.
"""

from __future__ import annotations

import logging
from typing import Any

from bench import tasks
from bench.runners._base import BenchRunner, Skip
from bench.runners.corral_runner import Corral

__all__ = ["CorralDask", "DaskDistributed", "DaskThreaded"]


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


def local_cluster(runner: BenchRunner) -> Any:
    """The cluster both distributed runners use (see the module's note)."""
    from distributed import LocalCluster

    c = runner.wl.concurrency
    processes = runner.wl.kind == "cpu"
    return LocalCluster(  # type: ignore[no-untyped-call]
        processes=processes,
        n_workers=c if processes else 1,
        threads_per_worker=1 if processes else c,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )


class DaskDistributed(BenchRunner):
    def setup(self) -> None:
        from distributed import Client

        self.dsk = dask_graph(self)
        self.keys = self.wl.sinks()
        self.cluster = local_cluster(self)
        self.client = Client(self.cluster)  # type: ignore[no-untyped-call]

    def run_once(self) -> None:
        self.client.get(self.dsk, self.keys)  # type: ignore[no-untyped-call]

    def teardown(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]
        self.cluster.close()


class CorralDask(Corral):
    """corral, every task on the dask executor, on the cluster ``dask-distributed`` uses."""

    executor = "dask"
    measure_plan = False

    def setup(self) -> None:
        if self.wl.kind not in ("noop", "sleep"):
            raise Skip("zero-duration and sleep workloads only")
        super().setup()
        from corral.executors.dask import DaskExecutor

        self.DaskExecutor = DaskExecutor
        self.cluster = local_cluster(self)

    def executors(self) -> dict[str, Any]:
        return {"dask": self.DaskExecutor(self.cluster.scheduler_address)}

    def teardown(self) -> None:
        self.cluster.close()
