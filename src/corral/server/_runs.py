"""Runs inside the server: started as asyncio tasks on the server's loop, with the same
:class:`~corral._runner.Runner` and :class:`~corral.store.StoreRecorder` as ``corral run``.

::

    POST /runs ──> RunManager.submit ── parse + validate (worker thread) ── save the text
                        │                                   (pipelines_dir, for resume)
                        └─ Runner(listeners=[StoreRecorder, ServerListener]) as an asyncio task
                                              │                 │
                                  store (group commit)    EventHub · Metrics · log
    POST /runs/{id}/cancel ──> Runner.cancel()        (as the first Ctrl-C would)
    POST /runs/{id}/resume ──> prepare_resume + launch, as the CLI ──> a new Runner

With a broker (``corral serve --broker``), ``launch`` sends the runs' attempts to the fleet's
``corral worker`` processes, as ``corral run --broker`` does.

``submit`` returns once the run is recorded in the store (the recorder's ``run_started``), so a
client can read the run, or follow its events, as soon as it has the id. The recorder is the
first listener: by the time the :class:`ServerListener` announces the end, the store holds the
whole history, and a stream that falls back to the store misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from corral._errors import NotResumable, ValidationError
from corral._graph import Graph
from corral._runner import Runner, default_concurrency, new_run_id
from corral._spec import ENDS_ATTEMPT, TaskState
from corral.server._errors import ApiError
from corral.server._events import Event, EventHub, transition_event, wall
from corral.server._metrics import LiveStats, Metrics

if TYPE_CHECKING:
    from corral._dag import DAG
    from corral._events import RunInfo, Transition
    from corral._limits import BreakerChange
    from corral._result import RunResult
    from corral.store import Resume, ResumePlan, RunRecord, Store

__all__ = ["LiveRun", "RunManager", "ServerListener", "Submission", "server_run_id", "shell_tasks"]

log = logging.getLogger("corral.server")

RUNNING = TaskState.RUNNING
RETRY_WAIT = TaskState.RETRY_WAIT
FAILED = TaskState.FAILED
# States that end an attempt (its duration is observed) and states that end a task.
_ENDS_ATTEMPT = ENDS_ATTEMPT
_FINAL = frozenset(s for s in TaskState if s.is_final)


def shell_tasks(graph: Graph) -> list[str]:
    """The tasks of ``graph`` that run shell commands."""
    return [t for t, x in zip(graph.ids, graph.executors, strict=True) if x == "shell"]


def server_run_id() -> str:
    """The CLI's sortable id with 16 more random bits: a busy server starts many runs a second."""
    return f"{new_run_id()}{secrets.token_hex(2)}"


@dataclass(frozen=True, slots=True)
class Submission:
    """A pipeline to run, as a client sent it."""

    text: str
    fmt: str | None = None
    file: str = "pipeline.yaml"
    params: Mapping[str, str] = field(default_factory=dict)
    only: tuple[str, ...] = ()
    concurrency: int | None = None
    fail_fast: bool = True
    # Where the text came from, for its call: modules (None: sent as text, no directory).
    base_dir: str | None = None
    # False: a pipeline with a shell command is refused (403 shell_not_allowed), for callers
    # that may submit text but should not run commands on this host (MCP over HTTP).
    allow_shell: bool = True


class ServerListener:
    """A run's events, fanned out to the event hub, the metrics and the log. On the run loop."""

    def __init__(self, hub: EventHub, metrics: Metrics, started: asyncio.Event) -> None:
        self.hub = hub
        self.metrics = metrics
        self.started = started
        self.run_id = ""
        self.seq = 0
        self.finished = False
        self._start: datetime | None = None
        self._executor_of: dict[str, str] = {}
        self._attempts: dict[str, int] = {}
        self._since: dict[str, float] = {}
        self._debug = log.isEnabledFor(logging.DEBUG)
        m = metrics
        self._started_c: dict[str, Any] = {}
        self._finished_c: dict[tuple[str, str], Any] = {}
        self._duration_h: dict[tuple[str, str], Any] = {}
        self._retries_c: dict[str, Any] = {}
        self._m = m

    def run_started(self, run: RunInfo) -> None:
        self.run_id = run.run_id
        self._start = run.started_at
        self._executor_of = {s.id: s.executor_name for s in run.graph.specs}
        self.hub.open_run(run.run_id, {
            "run_id": run.run_id, "pipeline": run.graph.name, "status": "running",
            "started_at": run.started_at.isoformat(), "n_tasks": len(run.graph)})
        self._m.runs_started.inc()
        log.info("run started", extra={
            "action": "run_started", "run_id": run.run_id, "task_id": None,
            "pipeline": run.graph.name, "tasks": len(run.graph), "concurrency": run.concurrency})
        self.started.set()

    def transitions(self, batch: list[Transition]) -> None:
        start = self._start
        assert start is not None
        run_id = self.run_id
        events: list[Event] = []
        attempts = self._attempts
        for t in batch:
            state = t.state
            task = t.task
            # Attempts are counted from the ordered transitions, as the recorder does, so that
            # the live events and the stored history say the same.
            attempt = attempts.get(task, 0)
            if state is RUNNING:
                attempt += 1
                attempts[task] = attempt
            self.seq += 1
            events.append(transition_event(run_id, self.seq, task, str(state), attempt, t.at,
                                           wall(start, t.at), t.error))
            self._observe(task, state, t)
        self.hub.publish(run_id, events)

    def _observe(self, task: str, state: TaskState, t: Transition) -> None:
        executor = self._executor_of.get(task, "")
        if state is RUNNING:
            self._since[task] = t.at
            counter = self._started_c.get(executor)
            if counter is None:
                counter = self._started_c[executor] = self._m.tasks_started.labels(executor)
            counter.inc()
        elif state in _ENDS_ATTEMPT:
            began = self._since.pop(task, None)
            if began is not None:
                outcome = "failed" if state is RETRY_WAIT else str(state)
                key = (outcome, executor)
                hist = self._duration_h.get(key)
                if hist is None:
                    hist = self._duration_h[key] = self._m.attempt_duration.labels(*key)
                hist.observe(t.at - began)
        if state is RETRY_WAIT:
            retries = self._retries_c.get(executor)
            if retries is None:
                retries = self._retries_c[executor] = self._m.task_retries.labels(executor)
            retries.inc()
            log.warning("task attempt failed, will retry", extra={
                "action": "task_retry", "run_id": self.run_id, "task_id": task,
                "error": t.error})
        if state in _FINAL:
            key2 = (str(state), executor)
            finished = self._finished_c.get(key2)
            if finished is None:
                finished = self._finished_c[key2] = self._m.tasks_finished.labels(*key2)
            finished.inc()
            if state is FAILED:
                log.warning("task failed", extra={"action": "task_failed", "run_id": self.run_id,
                                                  "task_id": task, "error": t.error})
        if self._debug:
            log.debug("task %s", state, extra={"action": "task_transition", "run_id": self.run_id,
                                              "task_id": task, "state": str(state),
                                              "attempt": t.attempt})

    def tasks_added(self, graph: Graph, ids: list[str]) -> None:
        """The run grew (for_each): its new tasks' executors, for their metrics."""
        for task_id in ids:
            self._executor_of[task_id] = graph.executors[graph.index[task_id]]

    def breaker_changed(self, change: BreakerChange) -> None:
        self._m.breaker_changes.labels(change.breaker, str(change.state)).inc()
        log.warning("circuit breaker %s", change.state, extra={
            "action": "breaker_changed", "run_id": self.run_id, "task_id": None,
            "breaker": change.breaker, "state": str(change.state)})

    def run_finished(self, result: RunResult) -> None:
        self.finished = True
        status = str(result.status)
        self._m.runs_finished.labels(status).inc()
        self.hub.finish_run(result.run_id, {
            "run_id": result.run_id, "status": status, "counts": result.counts(),
            "critical_path": result.critical_path,
            "finished_at": result.finished_at.isoformat(), "duration_s": result.duration_s})
        log.info("run finished", extra={
            "action": "run_finished", "run_id": result.run_id, "task_id": None,
            "status": status, "duration_s": round(result.duration_s, 3),
            "counts": result.counts()})


@dataclass(slots=True)
class LiveRun:
    """A run executing in this server."""

    run_id: str
    runner: Runner
    listener: ServerListener
    started: asyncio.Event
    task: asyncio.Task[None] | None = None
    result: RunResult | None = None
    error: BaseException | None = None


def _suffix(fmt: str | None, text: str) -> str:
    if fmt is None:
        fmt = "json" if text.lstrip().startswith("{") else "yaml"
    return ".json" if fmt == "json" else ".yaml"


class RunManager:
    """Starts, cancels and resumes runs; knows which are live. Methods run on the loop."""

    def __init__(
        self,
        store: Store,
        hub: EventHub,
        metrics: Metrics,
        *,
        log_dir: Path,
        pipelines_dir: Path,
        new_id: Callable[[], str] = server_run_id,
        broker: str | None = None,
    ) -> None:
        self.store = store
        self.broker = broker
        self.hub = hub
        self.metrics = metrics
        self.log_dir = log_dir
        self.pipelines_dir = pipelines_dir
        self.new_id = new_id
        self.accepting = True
        self._live: dict[str, LiveRun] = {}
        metrics.set_live_source(self.live_stats)

    # ------------------------------------------------------------------ queries
    def is_live(self, run_id: str) -> bool:
        return run_id in self._live

    def live_ids(self) -> list[str]:
        return list(self._live)

    def live_stats(self) -> list[LiveStats]:
        out: list[LiveStats] = []
        for live in list(self._live.values()):
            sched = live.runner.scheduler
            counts = sched.counts
            out.append((sched.concurrency, sched.running, counts[TaskState.READY],
                        counts[RETRY_WAIT]))
        return out

    # ------------------------------------------------------------------ submit
    async def submit(self, sub: Submission) -> str:
        """Validate ``sub``, start it, and return its run id once the store has the run.

        Raises the pipeline's :class:`~corral._errors.ValidationError` or
        :class:`~corral._errors.ParameterError` when it is invalid.
        """
        self._check_accepting()
        run_id = self.new_id()

        def prepare() -> tuple[Graph, Mapping[str, str], dict[str, str], int | None, Path]:
            from corral._pipeline import parse_pipeline

            pipeline = parse_pipeline(sub.text, file=sub.file, fmt=sub.fmt, params=sub.params,
                                      base_dir=sub.base_dir)
            graph = pipeline.dag.validate(only=sub.only or None)
            if not sub.allow_shell:
                shell = shell_tasks(graph)
                if shell:
                    raise ApiError(403, "shell_not_allowed", "shell commands are not allowed "
                                   f"here (tasks {', '.join(shell)}): allow them with "
                                   "corral mcp --allow-shell or corral serve "
                                   "--mcp-allow-shell")
            # Kept beside the store so the run can be resumed, by this server or the CLI.
            path = (self.pipelines_dir / f"{run_id}{_suffix(sub.fmt, sub.text)}").absolute()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(sub.text, "utf-8")
            return graph, pipeline.dag.env, pipeline.params, pipeline.concurrency, path

        graph, env, params, file_width, path = await anyio.to_thread.run_sync(prepare)
        # Precedence as for the CLI: the request > the file > one slot per CPU.
        width = sub.concurrency or file_width or default_concurrency()
        await self._start(run_id, graph, env=env, params=params, concurrency=width,
                          fail_fast=sub.fail_fast, source_path=str(path))
        return run_id

    async def _start(
        self,
        run_id: str,
        work: Graph | Resume,
        *,
        env: Mapping[str, str],
        params: Mapping[str, str],
        concurrency: int,
        fail_fast: bool,
        source_path: str | None,
    ) -> None:
        """Start ``work`` (a graph, or a resume) as run ``run_id``, assembled as every run is
        (:func:`corral._launch.launch`); return once the store has the run."""
        from corral._launch import LaunchOptions, launch, read_history

        graph = work if isinstance(work, Graph) else work.graph
        # Read off the event loop: other requests are served meanwhile.
        history = await anyio.to_thread.run_sync(read_history, self.store, graph)
        started = asyncio.Event()
        listener = ServerListener(self.hub, self.metrics, started)
        options = LaunchOptions(
            concurrency=concurrency, fail_fast=fail_fast, run_id=run_id, log_dir=self.log_dir,
            env=env, params=params, source_path=source_path, history=history,
            broker=self.broker)
        if self.broker:  # connecting to the broker blocks: off the loop
            made = await anyio.to_thread.run_sync(
                lambda: launch(work, self.store, listeners=[listener], options=options))
        else:
            made = launch(work, self.store, listeners=[listener], options=options)
        runner = made.runner
        self.metrics.instrument_scheduler(runner.scheduler)
        live = LiveRun(run_id, runner, listener, started)
        self._live[run_id] = live
        live.task = asyncio.create_task(self._drive(live), name=f"corral-run-{run_id}")
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait([waiter, live.task], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not started.is_set():  # the run could not even be recorded
            assert live.error is not None
            raise live.error

    async def _drive(self, live: LiveRun) -> None:
        run_id = live.run_id
        try:
            live.result = await live.runner.run()
        except Exception as exc:
            live.error = exc
            if live.started.is_set():
                log.error("run broke", exc_info=exc, extra={
                    "action": "run_broken", "run_id": run_id, "task_id": None})
        finally:
            self._live.pop(run_id, None)
            if not live.listener.finished:  # the recorder failed at the end: say so anyway
                error = f"{type(live.error).__name__}: {live.error}" if live.error else None
                self.hub.finish_run(run_id, {"run_id": run_id, "status": "failed",
                                             "error": error})

    # ------------------------------------------------------------------ cancel / resume
    def cancel(self, run_id: str) -> bool:
        """Stop a live run as the first Ctrl-C would; False if it is not live here."""
        live = self._live.get(run_id)
        if live is None:
            return False
        live.runner.cancel()
        log.info("run cancelled", extra={"action": "run_cancel", "run_id": run_id,
                                         "task_id": None})
        return True

    async def resume(self, run_id: str) -> tuple[str, ResumePlan]:
        """Start a run finishing ``run_id``; its new id and what it reuses. The decisions are
        the CLI's (:func:`~corral.store.prepare_resume`); only the answers are HTTP.

        :class:`ApiError` 409 when the run is live, succeeded, already resumed, or cannot be
        rebuilt; :class:`~corral._errors.RunNotFound` when there is no such run.
        """
        from corral.store import RunLocked, prepare_resume

        self._check_accepting()
        if self.is_live(run_id):
            raise ApiError(409, "run_running", f"run {run_id!r} is running: cancel it first")
        store = self.store

        def prepare() -> tuple[Resume, dict[str, str], Mapping[str, Any]]:
            env: dict[str, str] = {}

            def rebuild(run: RunRecord) -> DAG:
                dag = _rebuild(run)
                env.update(dag.env)
                return dag

            try:
                resume = prepare_resume(store, rebuild, run_id=run_id)
            except NotResumable as exc:
                code = "nothing_to_resume" if exc.why == "succeeded" else "already_resumed"
                raise ApiError(409, code, str(exc)) from exc
            except ValidationError as exc:  # the stored pipeline parses, but is no DAG now
                raise ApiError(409, "not_resumable", f"the pipeline stored with run "
                               f"{run_id!r} no longer loads: {exc}") from exc
            assert resume is not None  # by id: a run, or RunNotFound
            events = store.events(run_id)
            return resume, env, next((e.data for e in events if e.kind == "run_started"), {})

        resume, env, started = await anyio.to_thread.run_sync(prepare)
        run = resume.run
        new_id = self.new_id()
        concurrency = started.get("concurrency")
        try:
            await self._start(
                new_id, resume, env=env, params=dict(run.params),
                concurrency=concurrency if isinstance(concurrency, int) and concurrency > 0
                else default_concurrency(),
                fail_fast=bool(started.get("fail_fast", True)), source_path=run.source_path)
        except RunLocked as exc:
            raise ApiError(409, "run_running", f"run {run_id!r} is running in another process "
                           f"({run.lease_owner})") from exc
        log.info("run resumed", extra={"action": "run_resumed", "run_id": new_id,
                                       "task_id": None, "resumed_from": run_id,
                                       "reused": len(resume.plan.reuse)})
        return new_id, resume.plan

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise ApiError(503, "shutting_down", "the server is shutting down")

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, cancel the live runs and wait for them to record their end."""
        self.accepting = False
        tasks = [live.task for live in self._live.values() if live.task is not None]
        for run_id in list(self._live):
            self.cancel(run_id)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for task in tasks:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


def _rebuild(run: RunRecord) -> DAG:
    """A stored run's DAG, from the pipeline text stored with it and its parameters (which of
    its tasks run again is :func:`~corral.store.prepare_resume`'s to decide)."""
    from corral._pipeline import parse_pipeline

    if not run.source_text:
        raise ApiError(409, "not_resumable", f"run {run.id!r} was not started from a "
                       "pipeline file, so its DAG cannot be rebuilt")
    path = run.source_path or "<stored>"
    fmt = "json" if path.endswith(".json") else None
    # A run started from a file (corral run) finds its call: modules next to that file, as it
    # did then; for one submitted as text the directory is the server's copy's: no modules.
    base = Path(path).parent if run.source_path else None
    try:  # validated once, by prepare_resume
        pipeline = parse_pipeline(run.source_text, file=path, fmt=fmt, params=dict(run.params),
                                  base_dir=base)
    except (ValidationError, ValueError) as exc:
        raise ApiError(409, "not_resumable",
                       f"the pipeline stored with run {run.id!r} no longer loads: {exc}") from exc
    return pipeline.dag
