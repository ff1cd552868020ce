"""The one place runs are put together: start a run, or finish a recorded one.

Front ends decide *what* runs (a validated graph, or a :class:`~corral.store.Resume` of a
recorded run) and *who watches* (listeners); how a run is assembled from that is decided here,
the same way for every one of them::

    DAG.run / run_async ──┐
    corral run / resume ──┤                             ┌─ ranks: estimates, else the store's
    corral serve ─────────┼──> launch(work, store, ...) ┤   history of each task's durations
    (MCP, test runner,    │         -> Launch           ├─ StoreRecorder first among listeners
     fleet coordinator) ──┘                             └─ Runner(done = the resume's values)

A :class:`Launch` holds the runner (``cancel()``, ``snapshot()``, the run id before it starts)
and the recorder (``None`` for an in-memory run). ``await launch.run()`` runs it: when it
returns, the history is in the store. Persistence (``store/``) records and plans resumes; it
does not assemble runs.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral._graph import Graph

if TYPE_CHECKING:
    from corral._events import RunListener
    from corral._result import RunResult
    from corral._runner import Runner
    from corral.executors._base import Executor
    from corral.store import Resume, Store, StoreRecorder

__all__ = ["DEFAULT_LEASE_S", "Launch", "LaunchOptions", "launch", "read_history"]

# How long a run's lease lasts when nobody renews it; renewed RENEWALS_PER_LEASE times per
# lease, so a busy writer missing a few renewals is never taken for dead.
DEFAULT_LEASE_S = 30.0
RENEWALS_PER_LEASE = 6


@dataclass(frozen=True, kw_only=True)
class LaunchOptions:
    """How a run goes. ``concurrency`` None: one per CPU. ``log_dir`` None: no logs.
    ``history``: rank tasks without an ``estimate`` by the store's record of their durations
    (the critical path of a pipeline run before is known); or those durations, read already
    (a server reads them off its event loop); or False. ``source_path``: the pipeline file,
    stored with the run so that the CLI and the server can rebuild it to resume."""

    concurrency: int | None = None
    fail_fast: bool = True
    executors: Mapping[str, Executor] | None = None
    log_dir: str | Path | None = ".corral/logs"
    env: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    run_id: str | None = None
    handle_signals: bool = False
    rng: random.Random | None = None
    history: bool | Mapping[str, float] = True
    source_path: str | None = None
    lease_s: float = DEFAULT_LEASE_S
    # Tasks that need not run (up to date, corral._changes): they start as succeeded with
    # these values. A resume brings its own.
    done: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Launch:
    """A run, assembled and not yet started: ``await run()`` starts it."""

    runner: Runner
    recorder: StoreRecorder | None
    history: Mapping[str, float]  # durations the ranks came from (empty: none used)

    @property
    def run_id(self) -> str:
        return self.runner.run_id

    async def run(self) -> RunResult:
        """Run to the end. Raises :class:`~corral.errors.BrokenStore` when the store failed
        (the result, if the run got that far, is then ``recorder.result``)."""
        return await self.runner.run()


def read_history(store: Store, graph: Graph) -> dict[str, float]:
    """The median duration of each task's earlier successful attempts, for the tasks of
    ``graph`` without an ``estimate`` (an estimate wins)."""
    wanted = [s.id for s in graph.specs if s.estimate is None]
    return store.task_durations(graph.name, wanted) if wanted else {}


def launch(
    work: Graph | Resume,
    store: Store | None = None,
    *,
    listeners: Sequence[RunListener] = (),
    options: LaunchOptions | None = None,
) -> Launch:
    """Assemble a run of ``work``, recorded in ``store`` (None: in memory only).

    ``work`` is a graph (a new run) or a :class:`~corral.store.Resume` (finish a recorded run:
    its reused tasks start as succeeded with their stored values, and the old run is marked
    resumed by the new one). A resume whose run's lease is live raises
    :class:`~corral.errors.RunLocked` before anything is made.
    """
    from corral._plan import durations_of, upward_ranks
    from corral._runner import Runner

    opts = options or LaunchOptions()
    graph: Graph = work if isinstance(work, Graph) else work.graph
    done: Mapping[str, Any] | None = opts.done
    resume_of: str | None = None
    context: Mapping[str, Any] | None = None
    if not isinstance(work, Graph):
        if store is None:
            raise ValueError("a resume is recorded in the store of the run it resumes")
        work.check_unlocked()
        done, resume_of = work.plan.reuse, work.run.id
        context = work.plan.context  # what the tasks of the run it resumes left there
    history: Mapping[str, float] = {}
    if isinstance(opts.history, Mapping):
        history = opts.history
    elif store is not None and opts.history:
        history = read_history(store, graph)
    watchers = list(listeners)
    recorder = None
    if store is not None:
        from corral.store import StoreRecorder

        recorder = StoreRecorder(store, resume_of=resume_of, source_path=opts.source_path,
                                 lease=opts.lease_s,
                                 renew_every=opts.lease_s / RENEWALS_PER_LEASE)
        # First: a listener told that the run started may count on it being recorded, and a
        # store that refuses the run stops it before any other listener hears of it.
        watchers.insert(0, recorder)
    runner = Runner(
        graph,
        concurrency=opts.concurrency,
        fail_fast=opts.fail_fast,
        executors=opts.executors,
        listeners=watchers,
        run_id=opts.run_id,
        log_dir=opts.log_dir,
        env=opts.env,
        done=done,
        ranks=upward_ranks(graph, durations_of(graph, history)) if history else None,
        rng=opts.rng,
        handle_signals=opts.handle_signals,
        params=opts.params,
        context=context,
    )
    if recorder is not None:
        recorder.attach(runner)
    return Launch(runner, recorder, history)
