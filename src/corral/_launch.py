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

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral._graph import Graph
from corral._limits import POOL_BREAKER, Breaker

if TYPE_CHECKING:
    from corral._events import RunListener
    from corral._limits import BreakerBook, PoolBreakers, RateState
    from corral._result import RunResult
    from corral._runner import Runner
    from corral.executors._base import Executor
    from corral.store import Resume, Store, StoreRecorder

__all__ = [
    "DEFAULT_LEASE_S",
    "Launch",
    "LaunchOptions",
    "launch",
    "read_history",
]

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
    broker: str | None = None  # the fleet's broker URL: attempts run on `corral worker`s
    balance: Mapping[str, str] = field(default_factory=dict)  # queue -> strategy, over the DAG's
    # With a broker: each queue's circuit breaker against crashing workers, unless the
    # graph's queues set their own (None: none at all).
    pool_breaker: Breaker | None = POOL_BREAKER
    # Tasks that need not run (up to date, corral._changes): they start as succeeded with
    # these values. A resume brings its own.
    done: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Launch:
    """A run, assembled and not yet started: ``await run()`` starts it."""

    runner: Runner
    recorder: StoreRecorder | None
    history: Mapping[str, float]  # durations the ranks came from (empty: none used)
    warnings: tuple[str, ...] = ()  # history that could not be used, and why

    @property
    def run_id(self) -> str:
        return self.runner.run_id

    async def run(self) -> RunResult:
        """Run to the end. Raises :class:`~corral.errors.BrokenStore` when the store failed
        (the result, if the run got that far, is then ``recorder.result``)."""
        return await self.runner.run()


def read_history(
    store: Store, graph: Graph, warn: Callable[[str], None] | None = None
) -> dict[str, float]:
    """The median duration of each task's earlier successful attempts, for the tasks of
    ``graph`` without an ``estimate`` (an estimate wins). History only orders tasks: when it
    is damaged (a row that cannot be read, a duration that is not a finite number >= 0) what
    cannot be used is left out and ``warn`` told why (default: the ``corral`` logger)."""
    from corral._errors import CorruptHistory
    from corral._plan import usable_history

    say = warn or _log_warning
    wanted = [s.id for s in graph.specs if s.estimate is None]
    if not wanted:
        return {}
    try:
        raw = store.task_durations(graph.name, wanted)
    except CorruptHistory as exc:
        say(f"ordering tasks without run history: {exc}")
        return {}
    good, bad = usable_history(raw)
    if bad:
        say(f"ignored the stored durations of {len(bad)} task(s) (not a number >= 0): "
            + ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else ""))
    return good


def _log_warning(message: str) -> None:
    logging.getLogger("corral").warning(message, extra={"action": "history_ignored"})


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
    from corral._plan import prior_durations, usable_history
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
    warnings: list[str] = []
    if isinstance(opts.history, Mapping):
        history = usable_history(opts.history)[0]
    elif store is not None and opts.history:
        history = read_history(store, graph, warnings.append)
        for message in warnings:
            _log_warning(message)
    watchers = list(listeners)
    executors = opts.executors
    run_id = opts.run_id
    # Rate limits' and breakers' state: the run's own (None), or the fleet's on its broker.
    rates: RateState | None = None
    book: BreakerBook | None = None
    pools: PoolBreakers | None = None
    if opts.broker:
        from corral._runner import new_run_id

        run_id = run_id or new_run_id()
        executors, rates, book, pools = _fleet_executors(opts.broker, run_id, graph,
                                                         executors, opts, store)
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
        executors=executors,
        listeners=watchers,
        run_id=run_id,
        log_dir=opts.log_dir,
        env=opts.env,
        done=done,
        estimates=prior_durations(graph, history),
        rng=opts.rng,
        handle_signals=opts.handle_signals,
        params=opts.params,
        context=context,
        rates=rates,
        breakers=book,
        pools=pools,
    )
    if recorder is not None:
        recorder.attach(runner)
    return Launch(runner, recorder, history, tuple(warnings))


def _fleet_executors(
    url: str, run_id: str, graph: Graph, given: Mapping[str, Executor] | None,
    opts: LaunchOptions, store: Store | None,
) -> tuple[dict[str, Executor], RateState | None, BreakerBook | None, PoolBreakers | None]:
    """The run's executors in fleet mode: each executor name its tasks use (but those given,
    and ``dask``) sends its attempts to the fleet, through one session with the broker at
    ``url``, connected now (a broker that cannot be used raises
    :class:`~corral.errors.BrokenBroker` before anything starts); they admit less while the
    broker or ``store``'s connection pool is saturated. And the state of the run's rate
    limits and breakers, fleet-wide on a Redis broker (None: the run keeps its own), and the
    breakers of the queues' pools (None: ``opts.pool_breaker`` is None)."""
    from corral._runner import default_concurrency
    from corral.executors._registry import action_kind
    from corral.executors.fleet import fleet_executors
    from corral.fleet._coordinator import FleetSession

    names = set(graph.executors) - set(given or {})
    kinds = {name: action_kind(name) for name in names}
    queues = {s.id: s.queue for s in graph.specs if s.queue}
    session = FleetSession.connect(url, run_id, lease_s=opts.lease_s,
                                   balance={**graph.balance, **opts.balance}, rng=opts.rng,
                                   pool_stats=getattr(store, "pool_stats", None))
    fleet = fleet_executors(session, names, kinds=kinds, queues=queues, env=opts.env,
                            capacity=opts.concurrency or default_concurrency())
    used = {s.queue or "default" for s, name in zip(graph.specs, graph.executors, strict=True)
            if name in fleet}
    session.warn_unserved(used)
    from corral.fleet.limits import shared_flow

    rates, book = shared_flow(session.broker, graph.rate_limits, run_id,
                              breakers=bool(graph.breakers))
    pools = None
    if opts.pool_breaker is not None:
        from corral._limits import PoolBreakers

        pools = PoolBreakers(frozenset(fleet), opts.pool_breaker, graph.pool_breakers)
    return {**(given or {}), **fleet}, rates, book, pools
