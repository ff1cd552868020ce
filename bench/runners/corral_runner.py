"""corral, driven the way the engine is built to be driven: specs, graph, Runner.

Specs are made once in ``setup`` (they are the engine's description of the DAG, as a dask
graph dict is dask's); each repetition then times ``build_graph`` (validation and indexing)
plus a whole ``Runner.run()`` on a fresh event loop, result collection included.

Variants: ``corral`` (sync tasks on the ``thread`` executor, the busy loop on ``process``),
``corral-async`` (``async def`` tasks on the ``async`` executor), ``corral-noest`` (sleep
workloads without estimates, a first run: ranks count tasks until durations are learned per
task kind as attempts succeed, so the difference with ``corral`` is what the estimates buy;
``python -m bench.simulate`` gives the same comparison without overhead), ``corral-fifo``
(no estimates, every rank equal: arrival order, the FIFO schedule run by corral itself),
``corral-sqlite``
(``corral`` with the SQLite store attached) and the ``api`` workload (build a DAG with
``@dag.task``; no run).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import tasks
from bench.runners._base import BenchRunner, Skip

__all__ = ["Corral", "CorralAsync", "CorralFifo", "CorralNoEstimate", "CorralSqlite"]


class Corral(BenchRunner):
    use_async = False
    use_estimates = True
    measure_plan = True  # time validate+plan separately (only the reference variant does)
    executor: str | None = None  # every task on this executor (None: by kind, as below)

    def setup(self) -> None:
        # Imported here, not in the timed run: module import is not per-run cost.
        import corral
        from corral._graph import build_graph
        from corral._options import make_spec
        from corral._plan import make_plan
        from corral._result import RunStatus
        from corral._runner import Runner

        self.corral, self.build_graph, self.make_plan = corral, build_graph, make_plan
        self.Runner, self.SUCCEEDED = Runner, RunStatus.SUCCEEDED
        wl = self.wl
        if wl.kind == "api":
            return
        action: Any
        executor = self.executor or ("async" if self.use_async else "thread")
        if wl.kind == "noop":
            action = tasks.anoop if self.use_async else tasks.noop
            args: list[tuple[Any, ...]] = [()] * len(wl.ids)
        elif wl.kind == "sleep":
            action = tasks.asleep if self.use_async else tasks.sleep
            args = [(d,) for d in wl.durations]
        elif wl.kind == "cpu":
            if self.use_async:
                raise Skip("CPU work does not run in parallel on the event loop")
            action, executor = tasks.busy_loop, "process"
            args = [(wl.info.cpu_iters,)] * len(wl.ids)
        else:  # pragma: no cover - guarded by the registry
            raise Skip(f"no {wl.kind!r} workload in this runner")
        estimates = self.use_estimates and wl.kind == "sleep"
        self.specs = [
            make_spec(
                task_id,
                action,
                args=args[i],
                options={
                    "depends_on": wl.deps[i],
                    "executor": executor,
                    **({"estimate": wl.durations[i]} if estimates else {}),
                },
            )
            for i, task_id in enumerate(wl.ids)
        ]
        self.store_path: Path | None = None

    def listeners(self) -> list[Any]:
        """Listeners for the next run (none: the in-memory engine)."""
        return []

    def attach(self, runner: Any) -> None:
        """Hook to wire listeners to the runner before it runs."""

    def executors(self) -> dict[str, Any] | None:
        """The executors given to the next run by name (None: the registry's)."""
        return None

    def ranks(self, graph: Any) -> list[float] | None:
        """The ranks the next run orders ready tasks by (None: corral's own)."""
        return None

    def run_once(self) -> dict[str, float]:
        if self.wl.kind == "api":
            return self._api_build()
        t0 = time.perf_counter()
        graph = self.build_graph(self.specs, name=self.wl.name)
        t1 = time.perf_counter()
        runner = self.Runner(
            graph,
            concurrency=self.wl.concurrency,
            log_dir=None,
            listeners=self.listeners(),
            executors=self.executors(),
            ranks=self.ranks(graph),
        )
        self.attach(runner)
        result = asyncio.run(runner.run())
        if result.status is not self.SUCCEEDED:
            raise RuntimeError(f"corral run ended {result.status}")
        return {"build_graph_s": t1 - t0}

    def measure(self) -> dict[str, float] | None:
        if self.wl.kind == "api":
            return self._api_build(named=True)
        if not self.measure_plan:
            return None
        t0 = time.perf_counter()
        graph = self.build_graph(self.specs, name=self.wl.name)
        self.make_plan(graph, workers=self.wl.concurrency)
        return {"validate_plan_s": time.perf_counter() - t0}

    def _api_build(self, *, named: bool = False) -> dict[str, float]:
        """The decorator API as a user writes it: one decorated function called per task,
        passing upstream handles (ids generated: ``step``, ``step-2``, ...). ``named`` gives
        each task the workload's id with ``.options(id=...)`` instead, and also validates."""
        corral = self.corral
        wl = self.wl
        t0 = time.perf_counter()
        dag = corral.DAG(wl.name)

        @dag.task  # type: ignore[untyped-decorator]
        def step(*upstream: object) -> None:
            return None

        handles: dict[str, Any] = {}
        for task_id, deps in zip(wl.ids, wl.deps, strict=True):
            upstream = [handles[d] for d in deps]
            handles[task_id] = step.options(id=task_id)(*upstream) if named else step(*upstream)
        t1 = time.perf_counter()
        if not named:
            return {}
        dag.validate()
        t2 = time.perf_counter()
        return {"api_build_named_s": t1 - t0, "api_validate_s": t2 - t1}


class CorralAsync(Corral):
    use_async = True
    measure_plan = False


class CorralNoEstimate(Corral):
    use_estimates = False
    measure_plan = False

    def setup(self) -> None:
        if self.wl.kind != "sleep":
            raise Skip("only differs from 'corral' on sleep workloads")
        super().setup()


class CorralFifo(CorralNoEstimate):
    """corral ordering ready tasks by arrival alone (every rank equal, nothing learned): the
    FIFO schedule realised by the same engine, with the same overhead, so that ``corral-noest``
    ÷ ``corral-fifo`` compares the two orders and nothing else."""

    def ranks(self, graph: Any) -> list[float] | None:
        return [0.0] * len(graph)


class CorralSqlite(Corral):
    """``corral`` recording every run in the SQLite store (``corral.store``).

    The store is opened once, untimed, on a fresh database file (as a user opens it once);
    each repetition times a ``StoreRecorder`` attached to the run, whose writer thread
    group-commits the transitions and has flushed everything when the run returns.
    """

    measure_plan = False

    def setup(self) -> None:
        try:
            from corral.store import StoreRecorder, open_store
        except ImportError as exc:
            raise Skip(f"corral.store is not importable ({exc})") from None
        super().setup()
        self._tmp = tempfile.TemporaryDirectory(prefix="corral-bench-")
        self.store = open_store(f"sqlite:///{Path(self._tmp.name) / 'corral.db'}")
        self.StoreRecorder = StoreRecorder
        self._recorder: Any = None

    def listeners(self) -> list[Any]:
        self._recorder = self.StoreRecorder(self.store)
        return [self._recorder]

    def attach(self, runner: Any) -> None:
        self._recorder.attach(runner)

    def teardown(self) -> None:
        self.store.close()
        self._tmp.cleanup()
