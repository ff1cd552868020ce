"""Commands over a pipeline file that run nothing: ``validate``, ``plan``, ``graph``, and
``schema`` (the file format itself)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import click

from corral._errors import BrokenStore, ParameterError, Problem, ValidationError
from corral.cli._exits import ExitCode, UserError
from corral.cli._options import (
    emit_json,
    file_argument,
    import_options,
    json_option,
    load,
    no_store_option,
    only_option,
    open_run_store,
    params_option,
    store_option,
)

if TYPE_CHECKING:
    from corral._graph import Graph

__all__ = ["graph", "plan", "schema", "validate"]


def _n_edges(graph: Graph) -> int:
    return sum(len(d) for d in graph.deps)


# ---------------------------------------------------------------------- validate


@click.command()
@file_argument
@params_option
@json_option
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
        emit_json({"valid": not problems, "problems": [p.as_dict() for p in problems]})
    elif graph is not None:
        click.echo(f"ok: {len(graph)} tasks, {_n_edges(graph)} edges")
    else:
        for problem in problems:
            click.echo(str(problem))
    if problems:
        raise click.exceptions.Exit(int(ExitCode.INVALID))


# ---------------------------------------------------------------------- plan


@click.command()
@file_argument
@click.option(
    "-c",
    "--concurrency",
    "-w",
    "--workers",
    "concurrency",
    type=click.IntRange(min=1),
    envvar="CORRAL_CONCURRENCY",
    show_envvar=True,
    help="Tasks at once, for the lower bound (as `corral run -c`; --workers is the old name)  "
    "[default: the file's concurrency, else the CPU count]",
)
@only_option
@params_option
@json_option
@store_option
@no_store_option
@import_options
def plan(
    file: str,
    concurrency: int | None,
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
    max(critical path, total work / concurrency).
    """
    from corral._plan import estimate_sources, make_plan
    from corral._runner import default_concurrency

    pipeline = load(file, params, paths=paths, no_import=no_import, as_json=as_json)
    graph = pipeline.dag.validate(only=only or None)
    # The width the run would get: the option, else the file's concurrency, else one per CPU.
    n = concurrency or pipeline.concurrency or default_concurrency()
    history = {} if no_store else _history(store_url, graph)
    result = make_plan(graph, workers=n, history=history)
    sources = estimate_sources(graph, history)
    if as_json:
        # "workers" is the same number under its old name, for scripts that read it.
        emit_json({**result.as_dict(), "concurrency": n, "history_s": history,
                   "estimate_sources": sources})
        return
    from rich.console import Console

    from corral._display import render_plan

    render_plan(Console(highlight=False), result, pipeline=pipeline.name)
    click.echo(describe_sources(sources))


def describe_sources(sources: dict[str, int]) -> str:
    """Where a plan's durations come from, in one line."""
    parts = [f"{sources['given']} given (estimate)", f"{sources['history']} from history",
             f"{sources['none']} none"]
    line = "estimates: " + ", ".join(parts)
    if sources["none"]:
        line += (" (1 s each in this plan; a run learns them per task kind as attempts "
                 "succeed)")
    return line


def _warn(message: str) -> None:
    click.echo(f"corral: {message}", err=True)


def _history(store_url: str | None, graph: Graph) -> dict[str, float]:
    """Median durations of earlier successful attempts, from the store if there is one. A
    plan is advice: a store that cannot be read is a warning, not a failure."""
    try:
        store = open_run_store(store_url, create=False)
        if store is None:
            return {}
        # Only tasks without an estimate: an estimate, when given, wins.
        from corral._launch import read_history

        with contextlib.closing(store):
            return read_history(store, graph, warn=_warn)
    except (BrokenStore, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        click.echo(f"corral: planning without run history: {message}", err=True)
        return {}


# ---------------------------------------------------------------------- graph


@click.command()
@file_argument
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
@only_option
@params_option
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


@click.command()
def schema() -> None:
    """Print the JSON schema of pipeline files (for editors and linters)."""
    from corral._pipeline import pipeline_schema

    emit_json(pipeline_schema())
