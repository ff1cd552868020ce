"""The runners, one row each in :data:`RUNNERS`: add a row to plug in another engine.

A row names the class (imported only in the child process that runs it), the modules it needs
(a runner whose modules are missing is skipped with that reason, never installed), the
workload kinds it runs and an optional cap on task count for engines too slow to finish the
large workloads in reasonable time (lifted with ``--no-caps``).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from bench.runners._base import BenchRunner, Skip

__all__ = ["RUNNERS", "WHOLE_PROCESS", "BenchRunner", "RunnerEntry", "Skip", "load_runner"]

NOOP, SLEEP, CPU, API = "noop", "sleep", "cpu", "api"


@dataclass(frozen=True)
class RunnerEntry:
    name: str
    target: str  # "module:Class"
    kinds: frozenset[str]
    description: str
    requires: tuple[str, ...] = ()
    max_tasks: int | None = None
    install_hint: str = "pip install -e .[bench]"

    def unavailable(self) -> str | None:
        """Why this runner cannot run on this machine at all, or None."""
        for module in self.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return f"{module} is not installed ({self.install_hint})"
        return None

    def unsupported(self, kind: str, n_tasks: int, *, caps: bool = True) -> str | None:
        """Why this runner does not run a workload of this kind and size, or None."""
        if kind not in self.kinds:
            return f"does not run {kind} workloads"
        if caps and self.max_tasks is not None and n_tasks > self.max_tasks:
            return f"capped at {self.max_tasks} tasks (too slow per task; --no-caps lifts it)"
        return None


def _entry(name: str, target: str, kinds: set[str], description: str, **kw: object) -> RunnerEntry:
    return RunnerEntry(name, target, frozenset(kinds), description, **kw)  # type: ignore[arg-type]


RUNNERS: dict[str, RunnerEntry] = {
    e.name: e
    for e in [
        _entry(
            "floor-thread",
            "bench.runners.floor:FloorThread",
            {NOOP, SLEEP},
            "Kahn loop on ThreadPoolExecutor (the reference)",
        ),
        _entry(
            "floor-async",
            "bench.runners.floor:FloorAsync",
            {NOOP, SLEEP},
            "Kahn loop on asyncio worker coroutines",
        ),
        _entry(
            "floor-process",
            "bench.runners.floor:FloorProcess",
            {CPU},
            "Kahn loop on ProcessPoolExecutor (the CPU reference)",
        ),
        _entry(
            "serial",
            "bench.runners.floor:Serial",
            {NOOP, CPU},
            "tasks called in topological order in-process",
        ),
        _entry(
            "corral",
            "bench.runners.corral_runner:Corral",
            {NOOP, SLEEP, CPU, API},
            "corral in-memory: thread executor (process for CPU), estimates given",
        ),
        _entry(
            "corral-async",
            "bench.runners.corral_runner:CorralAsync",
            {NOOP, SLEEP},
            "corral, async def tasks on the async executor",
        ),
        _entry(
            "corral-noest",
            "bench.runners.corral_runner:CorralNoEstimate",
            {SLEEP},
            "corral without estimates: a first run (task counts, then durations learned per kind)",
        ),
        _entry(
            "corral-fifo",
            "bench.runners.corral_runner:CorralFifo",
            {SLEEP},
            "corral in arrival order (ranks equal, nothing learned): FIFO, corral's overhead",
        ),
        _entry(
            "corral-sqlite",
            "bench.runners.corral_runner:CorralSqlite",
            {NOOP, SLEEP, CPU},
            "corral with the SQLite store",
            requires=("corral.store",),
            install_hint="the SQLite store is missing from this checkout",
        ),
        _entry(
            "floor-cli",
            "bench.runners.cli_runner:FloorCli",
            {NOOP},
            "the floor as a whole process on the workload's pipeline file (bench.floor_cli)",
        ),
        _entry(
            "corral-cli",
            "bench.runners.cli_runner:CorralCli",
            {NOOP},
            "`corral run FILE --json`, whole process, default store (the user's path)",
        ),
        _entry(
            "corral-cli-nostore",
            "bench.runners.cli_runner:CorralCliNoStore",
            {NOOP},
            "`corral run FILE --json --no-store`, whole process",
        ),
        _entry(
            "dask-threaded",
            "bench.runners.dask_runner:DaskThreaded",
            {NOOP, SLEEP},
            "dask.threaded.get on a graph dict",
            requires=("dask",),
        ),
        _entry(
            "dask-distributed",
            "bench.runners.dask_runner:DaskDistributed",
            {NOOP, SLEEP, CPU},
            "dask.distributed LocalCluster (processes=False; processes for CPU)",
            requires=("distributed",),
            # ~1-40 ms per task in-process on 2 busy cores: 10k tasks took minutes.
            max_tasks=2_000,
        ),
        _entry(
            "corral-dask",
            "bench.runners.dask_runner:CorralDask",
            {NOOP, SLEEP},
            "corral, every task on its dask executor, on dask-distributed's cluster",
            requires=("distributed",),
            # a Dask round trip per attempt, as dask-distributed pays per task
            max_tasks=2_000,
        ),
        _entry(
            "ray",
            "bench.runners.ray_runner:Ray",
            {NOOP, SLEEP, CPU},
            "ray remote functions",
            requires=("ray",),
            max_tasks=20_000,
            install_hint="not installed by the bench extra: pip install ray",
        ),
        _entry(
            "prefect",
            "bench.runners.prefect_runner:Prefect",
            {NOOP, SLEEP},
            "prefect 3 flow on ThreadPoolTaskRunner",
            requires=("prefect",),
            max_tasks=2_000,
            install_hint="not installed by the bench extra: pip install 'prefect>=3'",
        ),
    ]
}


# Runners timed as whole processes (start to exit): compared with floor-cli, not floor-thread.
WHOLE_PROCESS = frozenset({"floor-cli", "corral-cli", "corral-cli-nostore"})


def load_runner(name: str) -> type[BenchRunner]:
    module, _, cls = RUNNERS[name].target.partition(":")
    runner: type[BenchRunner] = getattr(importlib.import_module(module), cls)
    return runner
