"""Running a pipeline: ``run`` and ``resume``, which share their options and their
execution (:func:`execute`: the live view or one line per task, the summary, the exit code).

Choosing the run to resume and planning it is :func:`corral.store.prepare_resume`, shared with
``DAG.run(resume=...)``; assembling the run is :func:`corral._launch.launch`, shared with
every front end. Only rebuilding the pipeline file and printing live here::

    prepare_resume(store, rebuild, run_id= | pipeline=) ──Resume──> execute ──> launch
    (load_run, checks, plan_resume)                 │               Runner(done=reused values)
                                                    └──> --dry-run  + StoreRecorder(resume_of)

``--json`` owns stdout: exactly one JSON document is written there; everything else, including
what tasks print, goes to stderr.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click

from corral._errors import BrokenStore
from corral.cli._exits import StoreError, UserError, exit_code_for
from corral.cli._history import when
from corral.cli._options import (
    Duration,
    emit_json,
    file_argument,
    json_option,
    load,
    no_import_option,
    no_store_option,
    only_option,
    open_run_store,
    params_option,
    path_option,
    stdout_to_stderr,
    store_option,
)

if TYPE_CHECKING:
    from corral._dag import DAG
    from corral._graph import Graph
    from corral._limits import Breaker
    from corral._pipeline import Pipeline
    from corral._result import RunResult
    from corral.store import Resume, RunRecord, Store

__all__ = ["RunOptions", "describe_action", "dry_run", "execute", "resume", "run",
           "run_options"]

F = TypeVar("F", bound=Callable[..., Any])


# ---------------------------------------------------------------------- run

# How long a run's lease lasts when nobody renews it (corral._launch.DEFAULT_LEASE_S): after a
# crash seen from another host, a resume waits at most this long (on the same host a dead
# process is seen at once, see corral.store._owner).
DEFAULT_LEASE = "30s"
# The PostgreSQL store's pool: the run's recorder, its lease renewal and a reader (the store
# batches writes in group commits, so a few connections serve any concurrency).
STORE_CONNECTIONS = 4


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The options ``run`` and ``resume`` share, as parsed by click (see :func:`run_options`)."""

    concurrency: int | None
    fail_fast: bool
    dry_run: bool
    params: tuple[str, ...]
    as_json: bool
    log_dir: str
    store_url: str | None
    no_store: bool
    store_connections: int
    lease: float
    paths: tuple[str, ...]
    no_import: bool
    dask: str | None
    broker: str | None
    balance: tuple[str, ...]
    pool_breaker: str | None
    junit_xml: str | None
    report: tuple[tuple[str, str], ...]

    def width(self, pipeline: Pipeline) -> int:
        """Tasks at once. Precedence: --concurrency > CORRAL_CONCURRENCY > corral.toml (all
        via click) > the pipeline file's ``concurrency`` > one per CPU."""
        from corral._runner import default_concurrency

        return self.concurrency or pipeline.concurrency or default_concurrency()

    def balance_map(self) -> dict[str, str]:
        """``--balance QUEUE=STRATEGY ...`` as a dict; a bad one is a usage error (exit 2)."""
        from corral.fleet._balance import parse_queues

        given: dict[str, str] = {}
        for pair in (p for value in self.balance for p in value.split(",") if p.strip()):
            queue, sep, strategy = pair.strip().partition("=")
            if not sep:
                raise UserError(f"--balance: {pair!r} is not QUEUE=STRATEGY "
                                "(e.g. default=least_loaded)")
            given[queue.strip()] = strategy.strip()
        found, problems = parse_queues(given)
        if problems:
            message, hint = problems[0]
            raise UserError(f"--balance: {message.removeprefix('queues: ')}"
                            + (f" ({hint})" if hint else ""))
        return found

    def pool_breaker_spec(self) -> Breaker | None:
        """``--pool-breaker`` as a breaker (None: off); a bad one is a usage error (exit 2)."""
        from corral._limits import parse_pool_breaker

        try:
            return parse_pool_breaker(True if self.pool_breaker is None else self.pool_breaker)
        except ValueError as exc:
            raise UserError(f"--pool-breaker: {exc}") from None

    def load(self, file: str, params: dict[str, str] | None = None) -> Pipeline:
        """The pipeline in ``file`` as these options say (``params`` come before ``-p``)."""
        pairs = tuple(f"{k}={v}" for k, v in (params or {}).items()) + self.params
        return load(file, pairs, paths=self.paths, no_import=self.no_import,
                    as_json=self.as_json)


_RUN_OPTIONS: list[Callable[[Any], Any]] = [
    click.option(
        "-c",
        "--concurrency",
        type=click.IntRange(min=1),
        envvar="CORRAL_CONCURRENCY",
        show_envvar=True,
        help="Tasks running at once  [default: the file's concurrency, else the CPU count]",
    ),
    click.option(
        "--fail-fast/--keep-going",
        default=True,
        envvar="CORRAL_FAIL_FAST",
        show_envvar=True,
        help="On a failure, cancel the rest of the run, or keep running what does not depend "
        "on it.",
    ),
    click.option(
        "-n",
        "--dry-run",
        is_flag=True,
        envvar="CORRAL_DRY_RUN",
        show_envvar=True,
        help="Validate and print what would run, in order, without running anything.",
    ),
    params_option,
    json_option,
    click.option(
        "--log-dir",
        type=click.Path(file_okay=False),
        default=".corral/logs",
        envvar="CORRAL_LOG_DIR",
        show_envvar=True,
        help="Where task logs go (one directory per run).",
    ),
    store_option,
    no_store_option,
    click.option(
        "--store-connections",
        type=click.IntRange(min=1),
        default=STORE_CONNECTIONS,
        envvar="CORRAL_STORE_CONNECTIONS",
        show_envvar=True,
        help="PostgreSQL store: connections this run may hold at once. Checked at start "
        "against the server's max_connections.",
    ),
    click.option(
        "--lease",
        type=Duration(),
        default=DEFAULT_LEASE,
        envvar="CORRAL_LEASE",
        show_envvar=True,
        help="The lease this run holds, renewed while it lives: if its process dies where "
        "others cannot check it (another host), they wait this long to resume it. On its own "
        "host a dead run is resumed at once. Does not shorten the wait for a run being resumed.",
    ),
    path_option,
    no_import_option,
    click.option(
        "--dask",
        metavar="ADDRESS",
        envvar="CORRAL_DASK_ADDRESS",
        show_envvar=True,
        help="Run tasks with `executor: dask` on the Dask scheduler at ADDRESS "
        "(tcp://host:8786)  [default: a local cluster for the run]",
    ),
    click.option(
        "--broker",
        metavar="URL",
        envvar="CORRAL_BROKER",
        show_envvar=True,
        help="Send every attempt to the fleet of `corral worker`s fed through this broker "
        "(redis://HOST:PORT/DB, postgresql://[USER@]HOST:PORT/DB) instead of running it here.",
    ),
    click.option(
        "--balance",
        multiple=True,
        metavar="QUEUE=STRATEGY",
        envvar="CORRAL_BALANCE",
        show_envvar=True,
        help="With --broker: how QUEUE's attempts are spread over its workers (pull, "
        "round_robin, random, least_loaded, weighted), over the file's queues:; repeatable.",
    ),
    click.option(
        "--pool-breaker",
        metavar="on|off|KEY=VALUE,...",
        envvar="CORRAL_POOL_BREAKER",
        show_envvar=True,
        help="With --broker: each queue's circuit breaker against crashing workers. It opens "
        "after `failures` infrastructure failures within `window`, holds the queue's tasks "
        "(on_open=wait; fail: they fail with CircuitOpen) and lets one probe through after "
        "`reset`  [default: failures=3,window=60s,reset=30s,half_open=1,on_open=wait]",
    ),
    click.option(
        "--junit-xml",
        metavar="PATH",
        type=click.Path(dir_okay=False, writable=True),
        envvar="CORRAL_JUNIT_XML",
        show_envvar=True,
        help="After the run, write JUnit XML there: one test case per task (duration, "
        "failure message, log tail).",
    ),
    click.option(
        "--report",
        nargs=2,
        multiple=True,
        metavar="md|json PATH",
        type=(click.Choice(["md", "json"]), click.Path(dir_okay=False, writable=True)),
        envvar="CORRAL_REPORT",
        show_envvar=True,
        help="After the run, write an execution report there (critical path, per-task times, "
        "retries, parallelism, failures with log tails); repeatable. `md` suits "
        "$GITHUB_STEP_SUMMARY.",
    ),
]


def run_options(f: F) -> F:
    """The options ``run`` and ``resume`` share, handed to ``f`` as ``opts: RunOptions``."""
    names = RunOptions.__dataclass_fields__

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        opts = RunOptions(**{name: kwargs.pop(name) for name in names})
        return f(*args, opts=opts, **kwargs)

    command: Any = wrapper
    for option in reversed(_RUN_OPTIONS):
        command = option(command)
    return cast(F, command)


@click.command()
@file_argument
@only_option
@click.option(
    "--resume",
    is_flag=True,
    envvar="CORRAL_RESUME",
    show_envvar=True,
    help="Resume the latest unfinished run of this pipeline: re-run only what did not "
    "succeed, or changed since (a new run when there is none to resume).",
)
@click.option(
    "--changed-only",
    is_flag=True,
    envvar="CORRAL_CHANGED_ONLY",
    show_envvar=True,
    help="Skip tasks that are up to date: they declare inputs:, and their inputs' contents, "
    "definition and upstream are unchanged since they last succeeded, and their outputs: "
    "exist (they keep the value they returned then).",
)
@run_options
def run(file: str, only: tuple[str, ...], resume: bool, changed_only: bool,
        opts: RunOptions) -> None:
    """Run a pipeline; exit 0 when every task succeeded (see exit codes in `corral --help`).

    Every run is recorded in the store (see --store), so that `corral show`, `corral logs`
    and `corral resume` can find it by the run id printed at the start and in the summary.
    """
    pipeline = opts.load(file)
    opts.balance_map()  # a bad --balance stops here, before anything starts
    opts.pool_breaker_spec()  # and a bad --pool-breaker
    if resume:
        if changed_only:
            raise UserError("--changed-only starts a new run: it does not go with --resume")
        resume_run(opts, file=file, only=only)
        return
    if changed_only and opts.no_store:
        raise UserError("--changed-only needs the run store, to know what last succeeded: "
                        "drop --no-store")
    if any(spec.inputs for spec in pipeline.dag.specs):
        from corral._changes import with_input_digests

        try:
            with_input_digests(pipeline.dag, Path.cwd())
        except ValueError as e:
            raise UserError(str(e)) from e
    dag_graph = pipeline.dag.validate(only=only or None)
    if not opts.dry_run:
        preflight(opts, file, dag_graph, opts.width(pipeline))
    # A dry run leaves nothing behind: it reads a store only if one exists (--changed-only).
    store = None if opts.no_store or (opts.dry_run and not changed_only) else \
        open_run_store(opts.store_url, create=not opts.dry_run,
                       connections=opts.store_connections)
    with contextlib.closing(store) if store is not None else contextlib.nullcontext():
        up_to_date = _up_to_date(pipeline, dag_graph, store) if changed_only else None
        if opts.dry_run:
            dry_run(pipeline, dag_graph, opts.width(pipeline), opts.as_json, up_to_date)
            return
        execute(pipeline, dag_graph, opts, store=store, up_to_date=up_to_date)


def preflight(opts: RunOptions, file: str | None, dag_graph: Graph | None,
              width: int | None) -> None:
    """Refuse to start (exit 2) when the settings ask for more than the machine or the
    PostgreSQL server has; print what is legal but unwise (corral._preflight)."""
    from corral._preflight import Demand, check, database_limits, machine
    from corral.store import resolve_url

    url = resolve_url(opts.store_url)
    postgres = not opts.no_store and url.startswith(("postgresql:", "postgres:"))
    demands = [Demand("store_connections: --store-connections, CORRAL_STORE_CONNECTIONS",
                      connections=opts.store_connections if postgres else 0)]
    if postgres and opts.broker and opts.broker.startswith(("postgresql:", "postgres:")):
        from corral.fleet._pg_schema import server_of
        from corral.fleet.postgres import PROCESS_CONNECTIONS

        if server_of(opts.broker) == server_of(url):  # the broker's count on the same server
            demands.append(Demand("the PostgreSQL broker: --broker, CORRAL_BROKER (its pool "
                                  "and its listening connection)",
                                  connections=PROCESS_CONNECTIONS))
    if dag_graph is not None:
        demands.append(Demand(
            f"concurrency: -c, CORRAL_CONCURRENCY or {file}'s concurrency:",
            concurrency=width or 0, processes="process" in dag_graph.executors))
        memory = dag_graph.capacity.get("memory_mb", 0.0)
        demands.append(Demand(f"resources: memory_mb in {file}", memory_mb=memory))
    for warning in check(machine(), demands, database_limits(url) if postgres else None):
        click.echo(f"corral: warning: {warning}", err=True)


def _up_to_date(pipeline: Pipeline, dag_graph: Graph, store: Store | None) -> dict[str, Any]:
    """``--changed-only``: the tasks to skip, with the values they returned when they last
    succeeded (corral._changes); says on stderr what it skips."""
    from corral._changes import last_successes, plan_up_to_date

    stored = last_successes(store, pipeline.name) if store is not None else None
    plan = plan_up_to_date(dag_graph, stored, Path.cwd())
    reuse = dict(plan.reuse)
    if reuse:
        shown = ", ".join(list(reuse)[:10]) + (f" and {len(reuse) - 10} more"
                                               if len(reuse) > 10 else "")
        click.echo(f"corral: up to date, not run: {shown}", err=True)
    return reuse


def describe_action(action: Any, args: Any = (), kwargs: Any = None) -> str:
    """What a task would execute, for ``--dry-run``: its command line or its call."""
    from corral._spec import CallRef, ShellCommand, TaskRef

    if isinstance(action, ShellCommand):
        return action.cmd
    if isinstance(action, CallRef):
        name = action.target
    else:
        module = getattr(action, "__module__", None)
        name = getattr(action, "__qualname__", repr(action))
        name = f"{module}:{name}" if module else name

    def show(value: Any) -> str:
        return f"<result of {value.id}>" if isinstance(value, TaskRef) else repr(value)

    parts = [show(a) for a in args] + [f"{k}={show(v)}" for k, v in (kwargs or {}).items()]
    return f"{name}({', '.join(parts)})"


def dry_run(pipeline: Pipeline, dag_graph: Graph, width: int, as_json: bool,
            up_to_date: Mapping[str, Any] | None = None) -> None:
    skip = up_to_date or {}
    order = [dag_graph.specs[i] for i in dag_graph.order if dag_graph.ids[i] not in skip]
    if as_json:
        emit_json(
            {
                "pipeline": pipeline.name,
                "dry_run": True,
                "concurrency": width,
                "params": pipeline.params,
                "up_to_date": list(skip),
                "tasks": [
                    {
                        "id": s.id,
                        "executor": s.executor_name,
                        "depends_on": list(s.depends_on),
                        "command": describe_action(s.action, s.args, s.kwargs),
                    }
                    for s in order
                ],
            }
        )
        return
    click.echo(
        f"dry run: {len(order)} tasks of {pipeline.name} would run "
        f"(concurrency {width}), in this order:"
    )
    for k, spec in enumerate(order, 1):
        deps = f"  (after {', '.join(spec.depends_on)})" if spec.depends_on else ""
        click.echo(f"{k:>4}. {spec.id} [{spec.executor_name}]{deps}")
        for line in describe_action(spec.action, spec.args, spec.kwargs).splitlines():
            click.echo(f"        {line}")


def _dask_executors(address: str | None) -> dict[str, Any] | None:
    """``--dask ADDRESS``: the dask executor for that scheduler, made here and given to the
    run by name (it imports nothing of dask until a task uses it)."""
    if not address or not address.strip():
        return None
    from corral.executors.dask import DaskExecutor

    return {"dask": DaskExecutor(address)}


def execute(
    pipeline: Pipeline,
    dag_graph: Graph,
    opts: RunOptions,
    *,
    store: Store | None,
    resume: Resume | None = None,
    up_to_date: Mapping[str, Any] | None = None,
) -> NoReturn:
    """Run ``dag_graph`` as ``opts`` say, recorded in ``store`` (None: in memory only), then
    exit with the run's code. Shared by ``run``, ``run --resume`` and ``resume``: ``resume``
    (from :func:`corral.store.prepare_resume`, whose graph is ``dag_graph``) names the run
    this one finishes and the tasks it reuses."""
    import asyncio

    from rich.console import Console

    from corral._display import LinePrinter, LiveView, render_summary
    from corral._events import RunListener
    from corral._launch import LaunchOptions, launch
    from corral._plan import make_plan

    width = opts.width(pipeline)
    console = Console(highlight=False)
    live = not opts.as_json and console.is_terminal
    listeners: list[RunListener] = []
    if not opts.as_json and not live:
        listeners.append(LinePrinter(sys.stdout))
    started = launch(resume or dag_graph, store, listeners=listeners, options=LaunchOptions(
        concurrency=width,
        fail_fast=opts.fail_fast,
        log_dir=opts.log_dir,
        env=pipeline.dag.env,
        params=pipeline.params,
        handle_signals=True,
        source_path=os.path.abspath(pipeline.path) if pipeline.path else None,
        lease_s=opts.lease,
        executors=_dask_executors(opts.dask),
        broker=opts.broker or None,
        balance=opts.balance_map(),
        pool_breaker=opts.pool_breaker_spec(),
        done=up_to_date,
    ))
    runner, recorder = started.runner, started.recorder
    # The graph and the runner's arrays live until the command ends, as the pipeline they
    # were made from does (cli._options.load): out of the cyclic collector's sight too, or
    # collections during the run walk them again and again.
    gc.freeze()
    # The median of each task's earlier successful attempts, for tasks without `estimate`,
    # ranked the critical path (longest tail first); it also sets the live view's first ETA.
    history = started.history
    reused = resume.plan.reuse if resume is not None else (up_to_date or {})
    store_failed: list[BrokenStore] = []

    async def run_once() -> RunResult:
        try:
            return await runner.run()
        except BrokenStore as exc:
            # The run ended but its end (or part of its history) could not be written: show
            # the outcome anyway, then the store's error. A store broken at the start raises.
            if recorder is None or recorder.result is None:
                raise
            store_failed.append(exc)
            return recorder.result

    async def go() -> RunResult:
        if not live:
            return await run_once()
        # The plan's lower bound is the ETA until the first task finishes (see
        # corral._display.estimate_remaining).
        planned = make_plan(dag_graph, workers=width, history=history).lower_bound_s
        view = LiveView(console, pipeline=pipeline.name, total=len(dag_graph), planned_s=planned)
        async with view.watch(runner):
            return await run_once()

    where = f"recorded in {store.url}" if store is not None else "not recorded (--no-store)"
    try:
        if opts.as_json:
            click.echo(f"corral: run {runner.run_id} of {pipeline.name}, {where}", err=True)
            with stdout_to_stderr():
                result = asyncio.run(go())
            doc = result.to_dict()
            doc.update(
                store=store.url if store is not None else None,
                resumed_from=resume.run.id if resume is not None else None,
                reused=list(reused),
            )
            emit_json(doc)
        else:
            result = asyncio.run(go())
            render_summary(
                console,
                result,
                log_dir=str(runner.log_dir) if runner.log_dir else None,
                reused=reused,
            )
    finally:
        if recorder is not None:
            recorder.close()  # an unexpected error: flush what was queued, record no end
    if result.signal:
        import signal

        try:
            name = signal.Signals(result.signal).name
        except ValueError:
            name = f"signal {result.signal}"
        click.echo(f"corral: run {result.run_id} interrupted by {name}", err=True)
    if store_failed:
        raise StoreError(f"run {result.run_id} ended {result.status}, but {store_failed[0]}")
    if store is not None and not opts.as_json:
        click.echo(f"run {result.run_id} {where}: corral show {result.run_id}")
        if not result.ok:
            click.echo(
                f"to finish it, re-running only what did not succeed: corral resume {result.run_id}"
            )
    _write_reports(result, dag_graph, opts)
    code = exit_code_for(result)
    if runner.signal and not result.signal:
        # The signal came as the run's end was being recorded: the run ended as recorded,
        # and corral still exits as a process stopped by that signal.
        code = 128 + runner.signal
    raise click.exceptions.Exit(code)


def _write_reports(result: RunResult, dag_graph: Graph, opts: RunOptions) -> None:
    """``--junit-xml``, ``--report`` and, under GitHub Actions, annotations of the failures
    (on stderr with ``--json``, whose stdout is the one JSON document)."""
    in_actions = os.environ.get("GITHUB_ACTIONS") == "true"
    if not (opts.junit_xml or opts.report or (in_actions and not result.ok)):
        return
    from corral._reports import github_annotations, write_junit, write_report

    specs = {spec.id: spec for spec in dag_graph.specs}
    try:
        if opts.junit_xml:
            write_junit(opts.junit_xml, result, specs)
        for fmt, path in opts.report:
            write_report(fmt, path, result, specs)
    except OSError as exc:
        raise UserError(f"run {result.run_id} ended {result.status}, but its report could not "
                        f"be written: {exc}") from exc
    if in_actions:
        for line in github_annotations(result, specs):
            click.echo(line, err=opts.as_json)


# ---------------------------------------------------------------------------- resume


@click.command()
@click.argument("run_id")
@run_options
def resume(run_id: str, opts: RunOptions) -> None:
    """Finish run RUN_ID: re-run only what did not succeed, reusing the rest's stored values.

    The DAG is rebuilt from the run's pipeline file as it is now, with the run's parameters
    (-p overrides them), restricted to the run's tasks. A task re-runs when it did not
    succeed, when its definition changed, or when a task it depends on re-runs. The run
    must not be alive elsewhere (exit 4): a run whose process died on this host is taken
    over at once; one from another host once its lease lapses (the --lease it was started
    with; --lease here is the lease of the new run).
    """
    resume_run(opts, run_id=run_id)


def resume_run(
    opts: RunOptions,
    *,
    run_id: str | None = None,
    file: str | None = None,
    only: tuple[str, ...] = (),
) -> None:
    """Resume run ``run_id``, or the latest unfinished run of the pipeline in ``file``
    (``corral run FILE --resume``; a new run when there is none). Exits like ``run``.

    Choosing the run and planning it is :func:`corral.store.prepare_resume`, as for
    ``DAG.run(resume=...)``; what is left here is rebuilding the pipeline and printing."""
    from corral.store import prepare_resume, resolve_url

    if opts.no_store:
        raise click.UsageError("resuming needs the run store: drop --no-store")
    if not opts.dry_run:
        preflight(opts, file, None, opts.concurrency)
    store = open_run_store(opts.store_url, create=file is not None,
                           connections=opts.store_connections)
    if store is None:
        from corral._errors import RunNotFound

        raise RunNotFound(
            f"no run {run_id!r}: there is no store at {resolve_url(opts.store_url)} yet"
        )
    with contextlib.closing(store):
        named = opts.load(file) if file is not None else None
        rebuilt: list[Pipeline] = []

        def rebuild(run: RunRecord) -> DAG:
            # The run's parameters, then -p: a changed parameter changes the tasks using it.
            source = file if file is not None else _source_file(run)
            rebuilt.append(opts.load(source, dict(run.params)))
            return rebuilt[-1].dag

        resume = prepare_resume(
            store,
            rebuild,
            run_id=run_id,
            pipeline=named.name if named is not None else None,
            only=only or None,
        )
        if resume is None:
            assert named is not None
            _new_run(named, store, opts, only)
            return
        pipeline = rebuilt[-1]
        if opts.dry_run:
            _print_resume_plan(pipeline, resume, opts)
            return
        resume.check_unlocked()
        note = (
            f"resuming run {resume.run.id} of {pipeline.name}: reusing {len(resume.plan.reuse)} "
            f"task(s), re-running {len(resume.plan.rerun)}"
        )
        click.echo(note, err=opts.as_json)
        execute(pipeline, resume.graph, opts, store=store, resume=resume)


def _new_run(pipeline: Pipeline, store: Store, opts: RunOptions, only: tuple[str, ...]) -> None:
    """``corral run FILE --resume`` with no unfinished run of the pipeline: run it afresh."""
    click.echo(
        f"corral: no unfinished run of {pipeline.name} in {store.url}: starting a new run",
        err=True,
    )
    graph = pipeline.dag.validate(only=only or None)
    if opts.dry_run:
        dry_run(pipeline, graph, opts.width(pipeline), opts.as_json)
        return
    execute(pipeline, graph, opts, store=store)


def _source_file(run: RunRecord) -> str:
    """The pipeline file ``run`` was started from, to rebuild it by id."""
    if not run.source_path:
        raise UserError(
            f"run {run.id} was not started from a pipeline file, so corral cannot "
            "rebuild it; resume it from Python with the DAG that made it: "
            f"dag.run(store=..., resume={run.id!r})"
        )
    if not os.path.exists(run.source_path):
        raise UserError(
            f"run {run.id}'s pipeline file {run.source_path} is gone; "
            "resume from where it is now: corral run FILE --resume"
        )
    return run.source_path


def _print_resume_plan(pipeline: Pipeline, resume: Resume, opts: RunOptions) -> None:
    """``--dry-run`` of a resume: what would re-run and why, what would be reused."""
    run, plan = resume.run, resume.plan
    width = opts.width(pipeline)
    if opts.as_json:
        click.echo(
            json.dumps(
                {
                    "pipeline": pipeline.name,
                    "dry_run": True,
                    "resumes": run.id,
                    "status": str(run.observed_status),
                    "alive": run.lease_live,
                    "concurrency": width,
                    "params": pipeline.params,
                    "rerun": dict(plan.rerun),
                    "reuse": list(plan.reuse),
                },
                indent=2,
                default=str,
            )
        )
        return
    click.echo(
        f"dry run: resuming run {run.id} of {pipeline.name} ({run.observed_status}, "
        f"started {when(run.started_at)}) would re-run {len(plan.rerun)} task(s) "
        f"and reuse {len(plan.reuse)} (concurrency {width})"
    )
    if run.lease_live:
        click.echo(
            f"note: run {run.id} is still alive ({run.lease_owner}); resuming it now "
            "would be refused"
        )
    if plan.rerun:
        click.echo("would re-run:")
        pad = max(len(t) for t in plan.rerun)
        for task, why in plan.rerun.items():
            click.echo(f"  {task:<{pad}}  {why}")
    if plan.reuse:
        click.echo("would reuse (succeeded, unchanged):")
        for task in plan.reuse:
            click.echo(f"  {task}")
