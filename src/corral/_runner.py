"""The run loop: one asyncio loop drives the scheduler and dispatches to executors.

::

    Scheduler ──admit(now)──> Runner._dispatch ──Work──> Executor.submit
        ^                                                     │ sink(work, status, payload)
        │                                                     v
        └──succeeded/failed/skipped(i, now)── drain ── CompletionQueue (batched, thread-safe)

Each iteration: start what the scheduler admits, sleep until an outcome arrives or the
scheduler's next timer (a retry falling due, a deadline), then feed every outcome back in one
batch. The loop owns the run's clock (``time.monotonic()``, read each time: uvloop's
``loop.time()`` is cached per iteration, in milliseconds, and would time a fast task at 0 s),
every attempt's timing and value, and
signal handling; the scheduler decides, executors execute, listeners watch.

An attempt that runs past its ``timeout``, or goes silent past its ``heartbeat``, is written
off the same way: cancelled in its executor and failed with :class:`TaskTimeout` or
:class:`TaskHung`. An attempt of a task with a ``heartbeat`` gets ``work.beat``, which
executors call from any thread on each sign of life. A beat only stores the time in the
scheduler (:meth:`Scheduler.beat`) and never wakes the loop: the loop wakes when a silence
deadline comes due, and :meth:`Scheduler.hung` reads the last beat then.

Stopping: the first SIGINT/SIGTERM (or :meth:`Runner.cancel`) stops launching, cancels running
attempts in their executors and records them as cancelled; the second SIGKILLs every process
group corral started and exits at once. Signals are handled from before the run is recorded
until its end is: one that arrives in between — while tasks start, while a listener writes to
the store, during start-up or shut-down — makes the run ``interrupted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import secrets
import signal
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral import _capture, _context, _fanout, _planner, _signal_handlers, _throttle
from corral._capture import log_name
from corral._context import RunContext
from corral._errors import (
    BrokenExecutor,
    CircuitOpen,
    ForEachError,
    PlanError,
    TaskHung,
    TaskTimeout,
)
from corral._events import RunInfo, RunListener, Transition
from corral._graph import Graph
from corral._limits import BreakerBook, BreakerChange, LocalRates, PoolBreakers, RateState
from corral._result import RunResult
from corral._run_growth import GrowingRun, direct_action
from corral._run_result import ResultOfRun
from corral._scheduler import Scheduler
from corral._spec import (
    ENDS_ATTEMPT,
    CallRef,
    ShellCommand,
    TaskSpec,
    TaskState,
    substitute_refs,
    takes_values,
)
from corral.executors._base import (
    ERROR,
    OK,
    SKIP,
    STARTED,
    CompletionQueue,
    Executor,
    ExecutorSettings,
    WatchedWork,
    Work,
)
from corral.executors._registry import executor_class
from corral.executors.thread import ThreadExecutor

__all__ = ["Runner", "default_concurrency", "new_run_id"]

RUNNING = TaskState.RUNNING
SUCCEEDED = TaskState.SUCCEEDED


def default_concurrency() -> int:
    """The CPU count: the natural width for a machine (shell and I/O tasks may want more)."""
    return os.cpu_count() or 1


def new_run_id() -> str:
    """Sortable by start time, unique enough to type: ``20261123-143012-a1b2c3``."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"




class Runner(GrowingRun, ResultOfRun):
    """Runs one graph once. For callers: construct, then ``await run()``; ``cancel()`` stops.

    ``executors`` maps executor names to instances; a name a task uses and ``executors`` does not
    give is made by its class's :meth:`~corral.executors.Executor.for_run` (the registry: a thread
    pool as wide as ``concurrency``, one process per CPU, ...). ``done`` maps ids of tasks that
    already succeeded (resume) to their values. ``log_dir`` is where per-attempt logs go (created
    only if a task writes one). ``handle_signals`` installs SIGINT/SIGTERM handlers (main
    thread). ``rates`` holds the state of the graph's rate limits (default: this run's own, in
    this process; a shared one makes the limits hold across runs: corral._limits.RateState),
    ``breakers`` that of its circuit breakers (corral._limits.BreakerBook; likewise);
    ``pools`` gives the fleet's queues breakers of their own (corral._limits.PoolBreakers).
    ``estimates`` (each task's prior duration or None) and ``ranks`` order the ready tasks (see
    :class:`~corral._scheduler.Scheduler`).
    """

    def __init__(
        self,
        graph: Graph,
        *,
        concurrency: int | None = None,
        fail_fast: bool = True,
        executors: Mapping[str, Executor] | None = None,
        listeners: Sequence[RunListener] = (),
        run_id: str | None = None,
        log_dir: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        done: Mapping[str, Any] | None = None,
        ranks: Sequence[float] | None = None,
        estimates: Sequence[float | None] | None = None,
        rng: random.Random | None = None,
        handle_signals: bool = False,
        params: Mapping[str, str] | None = None,
        rates: RateState | None = None,
        context: Mapping[str, Any] | None = None,
        breakers: BreakerBook | None = None,
        pools: PoolBreakers | None = None,
    ) -> None:
        self.graph = graph
        self.concurrency = concurrency or default_concurrency()
        self.fail_fast = fail_fast
        self.run_id = run_id or new_run_id()
        self.log_dir = Path(log_dir) / self.run_id if log_dir is not None else None
        self.env = dict(env or {})
        self.params = dict(params or {})
        self.listeners = list(listeners)
        self.handle_signals = handle_signals
        self._given_executors = dict(executors or {})
        self._executors: dict[str, Executor] = {}
        done = done or {}
        # Fan-out (corral._fanout): each for_each task, by index, as written; in the graph
        # that runs it is its gather. Over an upstream already done (a resume), it fans out
        # now, before anything starts.
        self._watched = any(s.heartbeat is not None for s in graph.specs)
        self._mapped = _fanout.mapped(graph.specs)
        self._over = {}
        self._members = {}
        self._fan_errors = {}
        if self._mapped:
            graph, ranks = self._fan_out_at_start(graph, done, ranks)
            self.graph = graph
        # Planner tasks (corral._planner): each planner's children, by index; a planner
        # already done (a resume) brings its stored plan, which joins the run now.
        self._plans = {}
        self._tasks_pending = set()
        if any(_planner.is_plan_data(v) for v in done.values()):
            graph, ranks = self._plans_at_start(graph, done, ranks)
            self.graph = graph
        n = len(graph)
        if estimates is not None and len(estimates) < n:  # tasks the resume grew: unknown
            estimates = [*estimates, *(s.estimate for s in graph.specs[len(estimates):])]
        # started as succeeded: a resume reuses their values
        self._reused = tuple(t for t in done if t in graph.index)
        # The state of the run's rate limits (given: shared with others, the seam for
        # fleet-wide limits; else this process's own): the scheduler admits tasks by them,
        # and corral.limit() in a task of this process takes them too (corral._throttle).
        self.rates: RateState = rates if rates is not None else LocalRates(graph.rate_limits)
        self.breaker_changes: list[BreakerChange] = []
        # The run's shared key-value context (corral.context()); a resume restores it.
        self.context = RunContext(context)
        self.scheduler = Scheduler(
            graph,
            concurrency=self.concurrency,
            fail_fast=fail_fast,
            ranks=ranks,
            estimates=estimates,
            rng=rng,
            done=[graph.index[t] for t in done if t in graph.index],
            record=bool(self.listeners),
            rates=self.rates,
            breakers=breakers,
            pools=pools,
        )
        self.values = [None] * n
        for task_id, value in done.items():
            if task_id in graph.index:  # (an instance of a fan-out that is not made again)
                self.values[graph.index[task_id]] = value
        self.errors = [None] * n
        self.first_start = [None] * n
        self.attempt_start = [0.0] * n
        self.end = [None] * n
        self.current = [None] * n
        self.signal: int | None = None
        self._signals_seen = 0  # SIGINT and SIGTERM received (the second one kills)
        self.error: str | None = None  # why the run itself failed (a stall), if it did
        # The error of each failed attempt until its transition is emitted (listeners only),
        # and who ran an attempt, when its executor said (a remote worker).
        self._failures: dict[tuple[int, int], BaseException] = {}
        self._workers: dict[tuple[int, int], str] = {}
        # Log files are <log_dir>/<run>/<task>.<attempt>.log: the prefix, for transitions.
        self._log_prefix = None if self.log_dir is None else f"{self.log_dir}{os.sep}"
        # The log file of each attempt dispatched, until its start is told to listeners (the
        # transition names the same file: made once, not twice).
        self._started_logs: dict[int, tuple[int, str]] = {}
        self._t0 = 0.0
        self._started_at = datetime.now(UTC)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: CompletionQueue | None = None
        # Per task, what to call and whether its arguments hold upstream references; both
        # found once, here, not on every dispatch.
        self._executor_of = graph.executors
        self._has_refs = list(map(takes_values, graph.specs))
        # What each task calls; a reference or command is resolved at its first dispatch.
        self._fns = list(map(direct_action, graph.specs))
        self._log_dir_made = False
        self._calls: dict[tuple[str, tuple[str, ...]], Any] = {}  # call: target -> function
        # Whether any task has a heartbeat (self._watched, above): the only runs that look
        # for hung attempts, and that route print() of in-process tasks even without logs
        # (output is a sign of life).
        self._capturing = self.log_dir is not None or self._watched
        self._finished: asyncio.Future[None] | None = None
        self._stopped = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    # ------------------------------------------------------------------ public
    def cancel(self, sig: int | None = None) -> None:
        """Stop the run as the first Ctrl-C would. Call it on the run loop's thread.

        Until the run's end is recorded, the run then ends ``interrupted``, even if every task
        had ended already (a signal during shut-down)."""
        if self.signal is None:
            self.signal = sig if sig is not None else 0
        if self._queue is not None:
            self._queue.poke()

    def now(self) -> float:
        """Seconds since the run started, on the run's clock (any thread may read it: tasks'
        ``corral.limit``, executors' beats)."""
        return time.monotonic() - self._t0

    def snapshot(self) -> dict[str, Any]:
        """Counts by state and the running tasks with their start times, for a live display."""
        sched = self.scheduler
        running = [
            (self.graph.ids[i], self.attempt_start[i], sched.attempts[i])
            for i, w in enumerate(self.current) if w is not None
        ] if sched.running else []
        return {"counts": {str(k): v for k, v in sched.counts.items()}, "running": running,
                "total": len(self.graph)}

    async def run(self) -> RunResult:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._queue = CompletionQueue(loop, self._pump)
        self._t0 = time.monotonic()
        self._started_at = datetime.now(UTC)
        info = RunInfo(
            run_id=self.run_id,
            graph=self.graph,
            started_at=self._started_at,
            concurrency=self.concurrency,
            fail_fast=self.fail_fast,
            log_dir=str(self.log_dir) if self.log_dir else None,
            params=self.params,
            reused=self._reused,
        )
        # From before the run is recorded until its end is: a signal in between interrupts
        # the run (and is recorded so), whatever the loop was doing when it came.
        installed = self._install_signals()
        _context.register(self.context)
        throttle = (_throttle.register(self.graph.rate_limits, self.rates, self.now)
                    if self.graph.rate_limits else None)
        try:
            cancelled: asyncio.CancelledError | None = None
            announced = capturing = False
            try:
                # Executors first: one that cannot start (a cluster out of reach) fails the
                # run before any listener hears of it, so that no run is recorded that never
                # ran. A signal meanwhile is kept (self.signal) and acted on at the first turn.
                for name in sorted(set(self._executor_of)):
                    await self._start_executor(name)
                for listener in self.listeners:
                    listener.run_started(info)
                announced = True
                self._emit()
                self._finished = loop.create_future()  # from here on, _pump turns
                if self._capturing:
                    _capture.install()  # print() of thread and async tasks goes to their logs
                    capturing = True
                self._queue.poke()
                await self._finished
            except asyncio.CancelledError as exc:
                # Cancelled from outside (the task awaiting us, or asyncio.run's own Ctrl-C
                # handler before ours was in place): stop as cancel() does, record the run as
                # interrupted, then let the cancellation go on.
                if not announced:
                    raise  # nothing was recorded, nothing ran
                cancelled = exc
                if self.signal is None:
                    self.signal = 0
                if not self._stopped:
                    self._stopped = True
                    self._stop(self.now())
                if self.listeners:
                    self._emit()
            finally:
                if self._timer is not None:
                    self._timer.cancel()
                if capturing:
                    _capture.uninstall()
                for executor in self._executors.values():
                    with contextlib.suppress(Exception):
                        await executor.shutdown()
            result = self._result()
            for listener in self.listeners:
                listener.run_finished(result)
        finally:
            _signal_handlers.give_back(installed)
            _context.unregister(self.context)
            if throttle is not None:
                _throttle.unregister(throttle)
        if cancelled is not None:
            raise cancelled
        return result

    # ------------------------------------------------------------------ the loop
    def _pump(self) -> None:
        """One turn of the run: feed every outcome in, start what can start, set the timer.

        Called by the event loop, never by us: when outcomes arrive (once per batch), when the
        scheduler's timer fires, and once at the start. It is the whole run loop; no task or
        future is created per turn.
        """
        finished = self._finished
        if finished is None or finished.done():
            return
        try:
            self._turn()
        except BaseException as exc:  # a bug or a broken executor: end run() with it
            finished.set_exception(exc)

    def _turn(self) -> None:
        assert self._loop is not None
        assert self._queue is not None
        assert self._finished is not None
        queue, sched, t0, clock = self._queue, self.scheduler, self._t0, time.monotonic
        watched = self._watched
        while True:
            now = clock() - t0
            for work, status, payload in queue.drain():
                self._complete(work, status, payload, now)
            for i in sched.expired(now):
                # an earlier timeout in this list may have stopped the run (fail-fast)
                if sched.state[i] is RUNNING:
                    self._time_out(i, now)
            if watched:
                for i in sched.hung(now):
                    if sched.state[i] is RUNNING:  # the same: fail-fast may have stopped it
                        self._hang_up(i, now)
            if self.signal is not None and not self._stopped:
                self._stopped = True
                self._stop(now)
            for i in sched.admit(now):
                self._dispatch(i, now)
            if not queue.rearm():  # nothing arrived meanwhile (inline completions, threads)
                break
        if self.listeners:
            self._emit()
        if sched.gate is not None and sched.gate.changes:
            self._breakers_changed(sched.gate.changes)
        if not sched.is_active():
            self._finished.set_result(None)
            return
        if sched.stalled() and not queue:
            self._stall(clock() - t0)
            return
        wake = sched.next_wake()
        if wake != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None if wake is None else self._loop.call_later(
                max(0.0, wake - (clock() - t0)), self._on_timer)
            self._timer_at = wake

    def _stall(self, now: float) -> None:
        """Nothing runs and nothing can ever start: fail the run with the reason of each task
        instead of waiting forever."""
        reasons = self.scheduler.blocked_reasons()
        ids = self.graph.ids
        lines = [f"{ids[i]}: {why}" for i, why in list(reasons.items())[:20]]
        more = f" (and {len(reasons) - 20} more)" if len(reasons) > 20 else ""
        self.error = "the run stalled: nothing is running and nothing can start; " + \
            "; ".join(lines) + more
        self._stop(now)  # cancels every task left; none is running, by definition
        if self.listeners:
            self._emit()
        assert self._finished is not None
        self._finished.set_result(None)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._pump()

    def _dispatch(self, i: int, now: float) -> None:
        spec = self.graph.specs[i]
        attempt = self.scheduler.attempts[i]
        if attempt == 1:
            self.first_start[i] = now
        self.attempt_start[i] = now
        if i in self._mapped:  # a fan-out's gather: no executor, it collects its instances
            self._gather(i, attempt)
            return
        gate = self.scheduler.gate
        if gate is not None and i in gate.refused:  # an open breaker: fail it, do not run it
            self._queue_put(i, attempt, ERROR, CircuitOpen(gate.refused[i],
                                                           breaker=gate.refused_by[i]))
            return
        if spec.when is not None and not self._holds(i, spec, attempt):
            return
        fn = self._fns[i]
        if fn is None:
            try:
                fn = self._fns[i] = self._resolve_action(i)
            except Exception as exc:  # an unimportable call: the task fails, not the run
                self._queue_put(i, attempt, ERROR, exc)
                return
        args: Any = spec.args
        kwargs: Any = spec.kwargs
        if self._has_refs[i]:
            lookup = self._value_of
            args = substitute_refs(args, lookup)
            kwargs = substitute_refs(kwargs, lookup)
        name = self._executor_of[i]
        log_path = None
        if self._log_prefix is not None:
            log_path = self._log_file(spec.id, attempt)
            if self.listeners:
                self._started_logs[i] = (attempt, log_path)
        heartbeat = spec.heartbeat
        work: Work
        if heartbeat is None:
            work = Work(i, attempt, spec.id, fn, args, kwargs, timeout=spec.timeout,
                        env=spec.env or None, cwd=spec.cwd, log_path=log_path,
                        resources=spec.resources or None)
        else:
            work = WatchedWork(i, attempt, spec.id, fn, args, kwargs, timeout=spec.timeout,
                               env=spec.env or None, cwd=spec.cwd, log_path=log_path,
                               resources=spec.resources or None,
                               heartbeat=heartbeat, beat=functools.partial(self._beat, i, attempt))
        self.current[i] = work
        executor = self._executors[name]
        if isinstance(executor, ThreadExecutor):  # its threads outlive this context
            work.fn = functools.partial(_context.call_in, self.context, fn)
        token = _context.current.set(self.context)  # an async task keeps it
        try:
            executor.submit(work)
        except Exception as exc:  # the executor is broken: this attempt fails, clearly
            error = BrokenExecutor(f"executor {name!r} could not start task {spec.id!r}: {exc}")
            error.__cause__ = exc
            self._queue_put(i, attempt, ERROR, error)
        finally:
            _context.current.reset(token)

    def _holds(self, i: int, spec: TaskSpec, attempt: int) -> bool:
        """Whether task ``i``'s ``when:`` holds now; if not, it is skipped (or, when the
        condition cannot be evaluated, it fails with the reason) instead of starting."""
        from corral._expressions import ExpressionError, TaskView

        index, state, values = self.graph.index, self.scheduler.state, self.values

        def view(task_id: str) -> TaskView:
            j = index[task_id]
            return TaskView(str(state[j]), values[j])

        try:
            holds: bool = spec.when.holds({**os.environ, **self.env, **spec.env}, view)
        except ExpressionError as exc:
            self._queue_put(i, attempt, ERROR, exc)
            return False
        if not holds:
            self._queue_put(i, attempt, SKIP, None)
        return holds

    def _beat(self, i: int, attempt: int) -> None:
        """A sign of life of attempt ``attempt`` of task ``i``; executors call it (through
        ``work.beat``) from any thread. The clock is the run's, read here."""
        self.scheduler.beat(i, attempt, time.monotonic() - self._t0)

    def log_path(self, task_id: str, attempt: int) -> Path | None:
        """Where attempt ``attempt`` of ``task_id`` writes its output."""
        if self._log_prefix is None:
            return None
        return Path(self._log_file(task_id, attempt))

    def _log_file(self, task_id: str, attempt: int) -> str:
        """:meth:`log_path` as a string, as the dispatch hands it on (made once per attempt:
        a string costs a fraction of a ``Path``); makes the run's log folder the first time."""
        assert self.log_dir is not None
        assert self._log_prefix is not None
        if not self._log_dir_made:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._log_dir_made = True
        return f"{self._log_prefix}{log_name(task_id)}.{attempt}.log"

    def _resolve_action(self, i: int) -> Any:
        action = self.graph.specs[i].action
        if isinstance(action, ShellCommand):
            return action.cmd
        if isinstance(action, CallRef):
            # Once per target in a run: ten thousand tasks calling one function import it
            # (and look at sys.path) once, not ten thousand times.
            key = (action.target, action.path)
            fn = self._calls.get(key)
            if fn is None:
                fn = self._calls[key] = action.resolve()
            return fn
        return action

    async def _start_executor(self, name: str) -> Executor:
        executor = self._given_executors.get(name)
        if executor is None:
            settings = ExecutorSettings(concurrency=self.concurrency, env=self.env)
            executor = executor_class(name).for_run(settings)
        assert self._queue is not None
        await executor.start(self._queue.put)
        self._executors[name] = executor
        slots = executor.slots
        if slots is not None and slots < self.concurrency:
            # Admit no more than it runs at once: nothing waits inside it after admission.
            if name in self.scheduler.graph.executors:
                self.scheduler.limit_executor(name, slots)
            else:  # started late, for a plan's tasks (none in the run yet)
                self.scheduler.limit_new_executor(name, slots)
        if executor.reports_start:
            self.scheduler.defer_timers(name)
        executor.watch_slots(functools.partial(self._slots_changed, name))
        if executor.slots != slots:  # it changed while we looked
            self._resize(name, turn=False)
        return executor

    def _slots_changed(self, name: str, executor: Executor) -> None:
        """Executor ``name``'s capacity changed (any thread): the loop admits by it."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the run is over
                loop.call_soon_threadsafe(self._resize, name)

    def _resize(self, name: str, turn: bool = True) -> None:
        executor = self._executors.get(name)
        if executor is None:
            return
        slots = executor.slots
        self.scheduler.resize_executor(name, min(slots or self.concurrency, self.concurrency))
        if turn:
            self._pump()  # more may start now

    def _queue_put(self, i: int, attempt: int, status: int, payload: Any) -> None:
        assert self._queue is not None
        work = Work(i, attempt, self.graph.ids[i], None)
        self.current[i] = work
        self._queue.put(work, status, payload)

    def _complete(self, work: Work, status: int, payload: Any, now: float) -> None:
        i = work.index
        if self.current[i] is not work:
            return  # an attempt already written off (timed out or cancelled): ignore it
        if status == STARTED:  # not an outcome: its timers start now
            self.scheduler.started(i, work.attempt, now)
            return
        self.current[i] = None
        self.end[i] = now
        if work.worker is not None and self.listeners:
            self._workers[i, work.attempt] = work.worker
        sched = self.scheduler
        if status == OK and type(payload) is _planner.Plan:  # a planner: the run grows
            planned = self._planned(i, work, payload)
            if planned is None:
                self.current[i] = work  # its plan needs executors that are starting
                return
            status, payload = planned
        if status == OK:
            if i in self._over:  # the list a for_each fans out over: the run grows first
                self._fan_out(i, payload)
            self.values[i] = payload
            self.errors[i] = None
            sched.succeeded(i, now)
        elif status == ERROR:
            self.errors[i] = payload
            if self.listeners:
                self._failures[i, work.attempt] = payload
            retryable = not isinstance(payload, ForEachError | PlanError)
            infra = isinstance(payload, BrokenExecutor)  # the machinery failed, not the task
            for j in sched.failed(i, now, retryable=retryable, infra=infra):
                self._cancel_running(j, now)
        elif status == SKIP:
            sched.skipped(i, now)
        else:  # CANCELLED by something other than us (a coroutine cancelled itself, ...)
            sched.cancelled(i, now)

    def _time_out(self, i: int, now: float) -> None:
        timeout = self.graph.specs[i].timeout
        self._write_off(i, now, TaskTimeout(
            f"task {self.graph.ids[i]!r} timed out after {timeout:g}s "
            f"(attempt {self.scheduler.attempts[i]})"
        ))

    def _hang_up(self, i: int, now: float) -> None:
        heartbeat = self.graph.specs[i].heartbeat
        silence = now - self.scheduler.last_beat[i]
        self._write_off(i, now, TaskHung(
            f"task {self.graph.ids[i]!r} showed no sign of life for {round(silence, 1):g}s "
            f"(heartbeat {heartbeat:g}s, attempt {self.scheduler.attempts[i]})"
        ))

    def _write_off(self, i: int, now: float, error: BaseException) -> None:
        """Fail the running attempt of task ``i`` with ``error`` now, and stop its work in the
        executor (whatever it reports later is ignored)."""
        work = self.current[i]
        self.current[i] = None
        self.end[i] = now
        self.errors[i] = error
        if self.listeners:
            self._failures[i, self.scheduler.attempts[i]] = error
        if work is not None:
            self._executor_cancel(work)
        for j in self.scheduler.failed(i, now):
            self._cancel_running(j, now)

    def _cancel_running(self, i: int, now: float) -> None:
        work = self.current[i]
        self.current[i] = None
        self.end[i] = now
        if work is not None:
            self._executor_cancel(work)
        self.scheduler.cancelled(i, now)

    def _executor_cancel(self, work: Work) -> None:
        executor = self._executors.get(self._executor_of[work.index])
        if executor is not None:
            executor.cancel(work)

    def _stop(self, now: float) -> None:
        for i in self.scheduler.stop(now):
            self._cancel_running(i, now)

    # ------------------------------------------------------------------ events
    def _breakers_changed(self, changes: list[BreakerChange]) -> None:
        """Keep the breakers' changes for the result, and tell listeners that listen."""
        batch = list(changes)
        changes.clear()
        self.breaker_changes.extend(batch)
        for listener in self.listeners:
            tell = getattr(listener, "breaker_changed", None)
            if tell is not None:
                for change in batch:
                    tell(change)

    def _emit(self) -> None:
        # What tasks wrote to the context first: a task's changes are told no later than
        # its outcome, so a store never keeps a success without them.
        changed, deleted = self.context.changes()
        if changed or deleted:
            for listener in self.listeners:
                tell = getattr(listener, "context_changed", None)
                if tell is not None:
                    tell(changed, deleted)
        batch = self.scheduler.drain_transitions()
        if not batch:
            return
        now = self.now()
        ids = self.graph.ids
        values = self.values
        failures = self._failures
        workers = self._workers
        logs = self._log_prefix
        started_logs = self._started_logs
        make = tuple.__new__  # a run emits three per task: skip the named tuple's __new__
        events = []
        for i, state, attempt in batch:
            if state is SUCCEEDED:
                value = values[i]
                events.append(make(Transition, (ids[i], state, attempt, now, None, None, value,
                                                None, None)))
            elif state is RUNNING and logs is not None:
                made = started_logs.pop(i, None)
                log = made[1] if made is not None and made[0] == attempt \
                    else f"{logs}{log_name(ids[i])}.{attempt}.log"
                events.append(make(Transition, (ids[i], state, attempt, now, None, None, None,
                                                log, None)))
            else:
                events.append(make(Transition, (ids[i], state, attempt, now, None, None, None,
                                                None, None)))
        if failures or workers:
            for k, (i, state, attempt) in enumerate(batch):
                if state not in ENDS_ATTEMPT:
                    continue
                worker = workers.pop((i, attempt), None) if workers else None
                err = failures.pop((i, attempt), None) if failures else None
                if err is not None or worker is not None:
                    events[k] = events[k]._replace(
                        error=None if err is None else f"{type(err).__name__}: {err}",
                        exception=err, worker=worker)
        for listener in self.listeners:
            listener.transitions(events)

    # ------------------------------------------------------------------ signals
    def _install_signals(self) -> dict[int, Any]:
        """Handle SIGINT and SIGTERM (unless ignored) until the handlers returned, which they
        replace, are given back. Plain ``signal.signal`` handlers, not the loop's: they run
        even while the loop is blocked (a listener writing to a slow store), so a second
        signal always ends the process at once."""
        if not self.handle_signals:
            return {}
        return _signal_handlers.take((signal.SIGINT, signal.SIGTERM), self._on_signal)

    def _on_signal(self, sig: int, frame: Any = None) -> None:
        """A signal handler: runs in the main thread between two bytecodes, anywhere."""
        self._signals_seen += 1
        if self._signals_seen > 1:
            # Second signal: no more waiting. Kill every process group we started and go.
            for executor in list(self._executors.values()):
                with contextlib.suppress(Exception):
                    executor.kill_all_now()
            os._exit(128 + sig)
        # The first: the run is interrupted (its result, computed after this, says so), and
        # the loop's next turn stops it as Runner.cancel() does.
        if self.signal is None:
            self.signal = sig
        queue = self._queue
        if queue is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to stop
                queue.poke()
