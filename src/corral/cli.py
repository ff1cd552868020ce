"""The ``corral`` command line: validate, plan, draw and run a pipeline file.

The CLI is a thin layer: it reads options (command line > ``CORRAL_*`` environment > the
pipeline file > computed defaults), loads the pipeline (:mod:`corral._pipeline`), and hands
over to the engine — :mod:`corral._plan` for ``plan``, :mod:`corral._export` for ``graph``,
:class:`corral._runner.Runner` for ``run``, with :mod:`corral._display` to show it.

Policies owned here:

- **Exit codes** live in :class:`ExitCode` and are listed in ``corral --help``.
- **A user's mistake never shows a traceback.** Invalid pipelines, bad parameters, unknown
  ``--only`` tasks and bad option values exit 2 with every problem listed; a traceback means a
  bug in corral.
- **Startup stays fast.** This module imports only click and the light ``corral`` package;
  each command imports what it needs (rich, YAML, the runner) when it runs, and commands that
  live in other modules are imported only when invoked (:func:`register_command`).
- **``--json`` owns stdout**: exactly one JSON document is written there; everything else,
  including what tasks print, goes to stderr.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import gc
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click

from corral import __version__
from corral._errors import (
    BrokenExecutor,
    BrokenStore,
    NotResumable,
    ParameterError,
    Problem,
    RunLocked,
    RunNotFound,
    ValidationError,
)

if TYPE_CHECKING:
    from corral._graph import Graph
    from corral._pipeline import Pipeline
    from corral._result import RunResult
    from corral.store import Resume, Store

__all__ = ["ExitCode", "RunOptions", "main", "register_command", "run_options"]

F = TypeVar("F", bound=Callable[..., Any])


class ExitCode(enum.IntEnum):
    """What ``corral`` exits with. Listed in ``corral --help``."""

    OK = 0  # every task succeeded (failures of allow_failure tasks aside), or the command did
    TASK_FAILED = 1  # a task failed, or could not run because one did
    INVALID = 2  # invalid input: pipeline, parameters, options, a missing file or run
    STORE = 3  # the run store cannot be used: locked, full, unreachable, newer, corrupt
    RUN_LOCKED = 4  # the run to resume is still alive elsewhere (its lease is live)
    EXECUTOR = 5  # an executor cannot start: its cluster is unreachable or unusable
    INTERRUPTED = 130  # stopped by SIGINT (Ctrl-C): 128 + 2
    TERMINATED = 143  # stopped by SIGTERM: 128 + 15


_EXIT_HELP = {
    ExitCode.OK: "all tasks succeeded (allowed failures aside)",
    ExitCode.TASK_FAILED: "a task failed",
    ExitCode.INVALID: "invalid input (pipeline, parameters, options, missing file or run)",
    ExitCode.STORE: "the run store cannot be used (locked, full disk, unreachable, newer schema)",
    ExitCode.RUN_LOCKED: "the run to resume is still alive elsewhere (its lease is live)",
    ExitCode.EXECUTOR: "an executor cannot start (a Dask scheduler unreachable); nothing ran",
    ExitCode.INTERRUPTED: "interrupted by SIGINT (Ctrl-C)",
    ExitCode.TERMINATED: "stopped by SIGTERM (any other signal: 128 + its number)",
}


def exit_code_for(result: RunResult) -> int:
    """The exit code of a finished run."""
    status = str(result.status)
    if status == "interrupted":
        # A run stopped by a signal exits as the shell reports a process killed by it;
        # cancelled without one (Runner.cancel()) counts as Ctrl-C.
        return 128 + result.signal if result.signal else int(ExitCode.INTERRUPTED)
    if status == "failed":
        return int(ExitCode.TASK_FAILED)
    return int(ExitCode.OK)


class UserError(click.ClickException):
    """The input is wrong; the message says what to change. Exits 2, without a traceback."""

    exit_code = int(ExitCode.INVALID)


class StoreError(click.ClickException):
    """The run store cannot be used; the message names it. Exits 3, without a traceback."""

    exit_code = int(ExitCode.STORE)


class ExecutorError(click.ClickException):
    """An executor cannot start; the message names it. Exits 5, without a traceback."""

    exit_code = int(ExitCode.EXECUTOR)


class LockedError(click.ClickException):
    """The run is held by a live process. Exits 4, without a traceback."""

    exit_code = int(ExitCode.RUN_LOCKED)


# ---------------------------------------------------------------------- the command group

# Commands defined in other modules: name -> "module:attribute". They are imported only when
# invoked or listed in --help, so a new command costs nothing to the others' startup.
_LAZY_COMMANDS: dict[str, str] = {}


def register_command(name: str, target: str) -> None:
    """Add command ``name``, found at ``target`` (``"corral._cli_runs:runs"``) when first used.

    For modules adding commands (``runs``, ``show``, ``logs``, ``resume``, ``serve``): one line
    here, in ``_LAZY_COMMANDS``, or a call at import time of something the CLI imports.
    """
    _LAZY_COMMANDS[name] = target


# The run store's commands (history and resume), see corral._cli_history.
for _name in ("logs", "prune", "resume", "runs", "show"):
    register_command(_name, f"corral._cli_history:{_name}")
# The HTTP service and its tokens (the `server` extra), see corral.server.
register_command("serve", "corral.server._cli:serve")
register_command("token", "corral.server._cli:token")


class CorralGroup(click.Group):
    """A click group that loads registered commands lazily and turns a user's mistake (an
    invalid pipeline, a bad parameter) into an exit-2 message instead of a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        target = _LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return None
        import importlib

        module_name, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):  # pragma: no cover - a registration bug
            raise TypeError(f"{target} is not a click command")
        self.add_command(command, cmd_name)
        return command

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run the command line. From here until a run takes the signals over (and again
        after it), SIGINT and SIGTERM end corral with exactly 130 and 143, wherever they land
        (click alone turns a Ctrl-C before a command runs into "Aborted!" and exit 1, and
        SIGTERM would kill the process outright)."""
        import signal
        import threading

        installed: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                installed[sig] = signal.signal(sig, _exit_on_signal)
        try:
            return super().main(*args, **kwargs)
        finally:
            for number, previous in installed.items():
                signal.signal(number, previous)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ValidationError, ParameterError, RunNotFound, NotResumable) as exc:
            raise UserError(str(exc)) from None
        except BrokenStore as exc:  # names the store's URL
            raise StoreError(str(exc)) from None
        except RunLocked as exc:
            raise LockedError(str(exc)) from None
        except BrokenExecutor as exc:  # raised before the run starts: nothing ran
            raise ExecutorError(str(exc)) from None
        except KeyboardInterrupt:
            # Ctrl-C outside a run (a run handles its own signals and exits 130 itself).
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(int(ExitCode.INTERRUPTED)) from None


def _exit_on_signal(sig: int, frame: Any) -> NoReturn:
    """SIGINT or SIGTERM outside a run: nothing is running, nothing is half-recorded (a run's
    end is recorded before it gives the signals back), so exit at once with 128 + N."""
    sys.stderr.write("corral: interrupted\n")
    raise SystemExit(128 + sig)


def _epilog() -> str:
    # "\b" keeps click from re-wrapping the lines into one paragraph.
    lines = ["\b", "Exit codes:"]
    lines += [f"  {int(code):<4} {_EXIT_HELP[code]}" for code in ExitCode]
    lines += ["\b", "Every option can also be set by the CORRAL_* variable shown next to it."]
    return "\n".join(lines)


CONTEXT_SETTINGS: dict[str, Any] = {
    "help_option_names": ["-h", "--help"],
    "show_default": True,
    "max_content_width": 100,
}


@click.group(cls=CorralGroup, context_settings=CONTEXT_SETTINGS, epilog=_epilog())
@click.version_option(__version__, "-V", "--version", prog_name="corral")
def main() -> None:
    """corral: define a DAG of tasks in a pipeline file, check it, plan it and run it."""


# ---------------------------------------------------------------------- shared options


def _file_argument(f: F) -> F:
    # No exists= check: the loader reports a missing or unreadable file as a problem like any
    # other, so that `validate --json` still prints JSON and every message has one shape.
    return click.argument("file", type=click.Path(), metavar="FILE")(f)


def _params_option(f: F) -> F:
    return click.option(
        "-p",
        "--param",
        "params",
        multiple=True,
        metavar="KEY=VALUE",
        envvar="CORRAL_PARAMS",
        show_envvar=True,
        help="Set a pipeline parameter (repeatable; in the variable, separate pairs by spaces).",
    )(f)


def _json_option(f: F) -> F:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        envvar="CORRAL_JSON",
        show_envvar=True,
        help="Print one JSON document on stdout instead of text.",
    )(f)


def _only_option(f: F) -> F:
    return click.option(
        "--only",
        multiple=True,
        metavar="TASK",
        envvar="CORRAL_ONLY",
        show_envvar=True,
        help="Keep only this task and everything it depends on (repeatable).",
    )(f)


def _path_option(f: F) -> F:
    return click.option(
        "--path",
        "paths",
        multiple=True,
        type=click.Path(exists=True, file_okay=False),
        metavar="DIR",
        envvar="CORRAL_PATH",
        show_envvar=True,
        help="Also look for call: modules in DIR, after sys.path and before the pipeline's "
        "python_path: and directory (repeatable; in the variable, separate with ':').",
    )(f)


def _no_import_option(f: F) -> F:
    return click.option(
        "--no-import",
        is_flag=True,
        envvar="CORRAL_NO_IMPORT",
        show_envvar=True,
        help="Check call: targets without importing their modules (no module code runs: the "
        "module is found, the function looked for in its source).",
    )(f)


def import_options(f: F) -> F:
    """``--path`` and ``--no-import``, for every command that loads a pipeline."""
    return _path_option(_no_import_option(f))


store_option = click.option(
    "--store",
    "store_url",
    metavar="URL",
    envvar="CORRAL_STORE",
    show_envvar=True,
    help="Run store: a SQLite file (sqlite:///path or a path) or postgresql://user@host/db "
    "[default: sqlite:///.corral/corral.db]",
)

no_store_option = click.option(
    "--no-store",
    is_flag=True,
    envvar="CORRAL_NO_STORE",
    show_envvar=True,
    help="Do not use the run store: nothing is recorded, no history is read.",
)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``500ms``, ``2w``; a bare number is seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 90m, 12h, 30d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


class Duration(click.ParamType[float]):
    """A duration option (``30s``, ``2m``, ``30d``; a bare number is seconds), as seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value)).total_seconds()
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def open_run_store(url: str | None, *, create: bool) -> Store | None:
    """The store at ``url`` (else ``$CORRAL_STORE``, else ``.corral/corral.db``).

    With ``create`` false, a SQLite store that does not exist yet is None rather than a new
    empty file: reading history must not leave databases behind.
    """
    from corral.store import open_store, resolve_url, store_exists

    url = resolve_url(url)
    try:
        if not create and not store_exists(url):
            return None
        return open_store(url)
    except ImportError as exc:  # the postgres extra is missing: say how to install it
        raise StoreError(f"{exc} (store: {url})") from None
    except ValueError as exc:  # not a store URL
        raise UserError(f"--store: {exc}") from None


def load(
    file: str,
    pairs: tuple[str, ...],
    *,
    paths: tuple[str, ...] = (),
    no_import: bool = False,
    as_json: bool = False,
) -> Pipeline:
    """The pipeline in ``file`` with parameters ``pairs``; raises a ValueError-kind error.

    ``paths`` (``--path``) are appended to ``sys.path`` first. Checking ``call:`` targets
    imports their modules unless ``no_import``; under ``as_json`` what those modules print
    goes to stderr, so that stdout stays one JSON document.
    """
    from corral._imports import add_to_sys_path
    from corral._pipeline import load_pipeline, parse_params

    add_to_sys_path(paths)
    params = parse_params(pairs)
    check = "find" if no_import else "import"
    # What a pipeline is read into lives until the command ends: freeze it out of the cyclic
    # garbage collector's sight, which would otherwise walk it again and again (a 100,000-task
    # file is millions of objects). The collector is off while it is read, then on again.
    gc.disable()
    try:
        with _stdout_to_stderr() if as_json else contextlib.nullcontext():
            return load_pipeline(file, params=params, check_calls=check)
    finally:
        gc.freeze()
        gc.enable()


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _n_edges(graph: Graph) -> int:
    return sum(len(d) for d in graph.deps)


# ---------------------------------------------------------------------- validate


@main.command()
@_file_argument
@_params_option
@_json_option
@import_options
def validate(
    file: str, params: tuple[str, ...], as_json: bool, paths: tuple[str, ...], no_import: bool
) -> None:
    """Check a pipeline file; list every problem, each with its file and line.

    Each call: target is imported to check that its module and function exist, which runs
    the module's top-level code (as a run would); --no-import only finds them.
    """
    problems: list[Problem] = []
    graph = None
    try:
        pipeline = load(file, params, paths=paths, no_import=no_import, as_json=as_json)
        graph = pipeline.dag.validate()
    except ValidationError as exc:
        problems = list(exc.problems)
    except ParameterError as exc:
        problems = [Problem(str(exc), file=file)]
    if as_json:
        _emit_json({"valid": not problems, "problems": [p.as_dict() for p in problems]})
    elif graph is not None:
        click.echo(f"ok: {len(graph)} tasks, {_n_edges(graph)} edges")
    else:
        for problem in problems:
            click.echo(str(problem))
    if problems:
        raise click.exceptions.Exit(int(ExitCode.INVALID))


# ---------------------------------------------------------------------- plan


@main.command()
@_file_argument
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(min=1),
    envvar="CORRAL_WORKERS",
    show_envvar=True,
    help="Workers for the lower bound  [default: the file's concurrency, else the CPU count]",
)
@_only_option
@_params_option
@_json_option
@store_option
@no_store_option
@import_options
def plan(
    file: str,
    workers: int | None,
    only: tuple[str, ...],
    params: tuple[str, ...],
    as_json: bool,
    store_url: str | None,
    no_store: bool,
    paths: tuple[str, ...],
    no_import: bool,
) -> None:
    """Show levels, width, critical path, total work and the makespan lower bound.

    Durations are the tasks' `estimate` options; where unset, the median duration of the
    task's earlier successful attempts in the run store; else 1 s. The lower bound is
    max(critical path, total work / workers).
    """
    from corral._plan import make_plan
    from corral._runner import default_concurrency

    pipeline = load(file, params, paths=paths, no_import=no_import, as_json=as_json)
    graph = pipeline.dag.validate(only=only or None)
    # The workers the run would get: the option, else the file's concurrency, else one per CPU.
    n = workers or pipeline.concurrency or default_concurrency()
    history = {} if no_store else _history(store_url, graph)
    result = make_plan(graph, workers=n, history=history)
    if as_json:
        _emit_json({**result.as_dict(), "history_s": history})
        return
    from rich.console import Console

    from corral._display import render_plan

    render_plan(Console(highlight=False), result, pipeline=pipeline.name)
    if history:
        click.echo(
            f"durations of {len(history)} task(s) without an estimate: "
            "the median of their earlier successful runs"
        )


def _history(store_url: str | None, graph: Graph) -> dict[str, float]:
    """Median durations of earlier successful attempts, from the store if there is one. A
    plan is advice: a store that cannot be read is a warning, not a failure."""
    try:
        store = open_run_store(store_url, create=False)
        if store is None:
            return {}
        # Only tasks without an estimate: an estimate, when given, wins.
        ids = [spec.id for spec in graph.specs if spec.estimate is None]
        with contextlib.closing(store):
            return store.task_durations(graph.name, ids)
    except (BrokenStore, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        click.echo(f"corral: planning without run history: {message}", err=True)
        return {}


# ---------------------------------------------------------------------- graph


@main.command()
@_file_argument
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    envvar="CORRAL_GRAPH_FORMAT",
    show_envvar=True,
    help="Output format.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    envvar="CORRAL_GRAPH_OUTPUT",
    show_envvar=True,
    help="Write to this file instead of stdout.",
)
@_only_option
@_params_option
@import_options
def graph(
    file: str,
    fmt: str,
    output: str | None,
    only: tuple[str, ...],
    params: tuple[str, ...],
    paths: tuple[str, ...],
    no_import: bool,
) -> None:
    """Export the task graph as Mermaid or Graphviz DOT (edges: dependency -> dependent)."""
    from corral._export import export

    pipeline = load(file, params, paths=paths, no_import=no_import, as_json=output is None)
    dag_graph = pipeline.dag.validate(only=only or None)
    text = export(dag_graph, "dot" if fmt == "dot" else "mermaid")
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------- schema


@main.command()
def schema() -> None:
    """Print the JSON schema of pipeline files (for editors and linters)."""
    from corral._pipeline import pipeline_schema

    _emit_json(pipeline_schema())


# ---------------------------------------------------------------------- run

# How long a run's lease lasts when nobody renews it (corral._launch.DEFAULT_LEASE_S): after a
# crash seen from another host, a resume waits at most this long (on the same host a dead
# process is seen at once, see corral.store._owner).
DEFAULT_LEASE = "30s"


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
    lease: float
    paths: tuple[str, ...]
    no_import: bool
    dask: str | None

    def width(self, pipeline: Pipeline) -> int:
        """Tasks at once. Precedence: --concurrency > CORRAL_CONCURRENCY (both via click) >
        the file's ``concurrency`` > one per CPU."""
        from corral._runner import default_concurrency

        return self.concurrency or pipeline.concurrency or default_concurrency()

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
    _params_option,
    _json_option,
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
        "--lease",
        type=Duration(),
        default=DEFAULT_LEASE,
        envvar="CORRAL_LEASE",
        show_envvar=True,
        help="The lease this run holds, renewed while it lives: if its process dies where "
        "others cannot check it (another host), they wait this long to resume it. On its own "
        "host a dead run is resumed at once. Does not shorten the wait for a run being resumed.",
    ),
    _path_option,
    _no_import_option,
    click.option(
        "--dask",
        metavar="ADDRESS",
        envvar="CORRAL_DASK_ADDRESS",
        show_envvar=True,
        help="Run tasks with `executor: dask` on the Dask scheduler at ADDRESS "
        "(tcp://host:8786)  [default: a local cluster for the run]",
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


@main.command()
@_file_argument
@_only_option
@click.option(
    "--resume",
    is_flag=True,
    envvar="CORRAL_RESUME",
    show_envvar=True,
    help="Resume the latest unfinished run of this pipeline: re-run only what did not "
    "succeed, or changed since (a new run when there is none to resume).",
)
@run_options
def run(file: str, only: tuple[str, ...], resume: bool, opts: RunOptions) -> None:
    """Run a pipeline; exit 0 when every task succeeded (see exit codes in `corral --help`).

    Every run is recorded in the store (see --store), so that `corral show`, `corral logs`
    and `corral resume` can find it by the run id printed at the start and in the summary.
    """
    pipeline = opts.load(file)
    if resume:
        from corral._cli_history import resume_run

        resume_run(opts, file=file, only=only)
        return
    dag_graph = pipeline.dag.validate(only=only or None)
    if opts.dry_run:
        _dry_run(pipeline, dag_graph, opts.width(pipeline), opts.as_json)
        return
    store = None if opts.no_store else open_run_store(opts.store_url, create=True)
    with contextlib.closing(store) if store is not None else contextlib.nullcontext():
        execute(pipeline, dag_graph, opts, store=store)


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


def _dry_run(pipeline: Pipeline, dag_graph: Graph, width: int, as_json: bool) -> None:
    order = [dag_graph.specs[i] for i in dag_graph.order]
    if as_json:
        _emit_json(
            {
                "pipeline": pipeline.name,
                "dry_run": True,
                "concurrency": width,
                "params": pipeline.params,
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


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout — by Python code, threads, C code or child
    processes — to stderr until the block ends, so ``--json`` output stays one document."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


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
    ))
    runner, recorder = started.runner, started.recorder
    # The median of each task's earlier successful attempts, for tasks without `estimate`,
    # ranked the critical path (longest tail first); it also sets the live view's first ETA.
    history = started.history
    reused = resume.plan.reuse if resume is not None else {}
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
            with _stdout_to_stderr():
                result = asyncio.run(go())
            doc = result.to_dict()
            doc.update(
                store=store.url if store is not None else None,
                resumed_from=resume.run.id if resume is not None else None,
                reused=list(reused),
            )
            _emit_json(doc)
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
    code = exit_code_for(result)
    if runner.signal and not result.signal:
        # The signal came as the run's end was being recorded: the run ended as recorded,
        # and corral still exits as a process stopped by that signal.
        code = 128 + runner.signal
    raise click.exceptions.Exit(code)


if __name__ == "__main__":  # pragma: no cover - `python -m corral.cli`
    main(prog_name="corral")
