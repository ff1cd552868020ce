"""CLI commands over the run store: ``runs``, ``show``, ``logs``, ``prune``, ``resume``.

Thin by design: each command opens the store, calls one or two :class:`~corral.store.Store`
methods and prints. The lead registers them into the main group::

    from corral._cli_history import COMMANDS
    for command in COMMANDS:
        main.add_command(command)

Every command takes ``--store URL`` (env ``CORRAL_STORE``; default ``.corral/corral.db``).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from corral.store import RunRecord, Store

__all__ = ["COMMANDS", "logs", "prune", "resume", "runs", "show"]

store_option = click.option(
    "--store", "store_url", envvar="CORRAL_STORE", show_envvar=True, default=None,
    help="Store URL: sqlite:///path or postgresql://... [default: sqlite:///.corral/corral.db]",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _open(url: str | None) -> Store:
    from corral._errors import CorralError
    from corral.store import open_store

    try:
        return open_store(url)
    except CorralError as exc:
        raise click.ClickException(str(exc)) from exc


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _status(run: RunRecord) -> str:
    if str(run.status) == "running" and not run.lease_live:
        return "crashed?"  # no end recorded and nobody heartbeats it
    return str(run.status)


def _run_dict(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.id, "pipeline": run.pipeline, "status": _status(run),
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_s": run.duration_s, "host": run.host, "user": run.user,
        "params": dict(run.params), "resumed_from": run.resumed_from,
        "resumed_by": run.resumed_by, "tasks": len(run.tasks),
    }


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` as a timedelta."""
    match = _DURATION.match(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 30d, 12h, 90m")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


@click.command()
@click.option("--status", type=click.Choice(
    ["running", "succeeded", "failed", "interrupted", "crashed"]), default=None)
@click.option("--pipeline", default=None, help="Only runs of this pipeline.")
@click.option("--limit", type=int, default=20, show_default=True)
@store_option
@json_option
def runs(status: str | None, pipeline: str | None, limit: int, store_url: str | None,
         as_json: bool) -> None:
    """List runs, newest first."""
    with _open(store_url) as store:
        found = store.list_runs(status=status, pipeline=pipeline, limit=limit)
    if as_json:
        click.echo(json.dumps([_run_dict(r) for r in found], indent=2))
        return
    if not found:
        click.echo("no runs")
        return
    for r in found:
        took = f"{r.duration_s:.1f}s" if r.duration_s is not None else "-"
        click.echo(f"{r.id}  {r.pipeline:<20} {_status(r):<12} {_when(r.started_at)}  {took}")


@click.command()
@click.argument("run_id")
@store_option
@json_option
def show(run_id: str, store_url: str | None, as_json: bool) -> None:
    """Show a run: its tasks, their final states, attempts and errors."""
    from corral._errors import CorralError

    with _open(store_url) as store:
        try:
            stored = store.load_run(run_id)
        except CorralError as exc:
            raise click.ClickException(str(exc)) from exc
    last: dict[str, Any] = {}
    for t in stored.transitions:
        if t.duration_s is not None:
            last[t.task_id] = t
    tasks = {
        task_id: {
            "state": str(task.state or "pending"), "attempts": task.attempts,
            "duration_s": last[task_id].duration_s if task_id in last else None,
            "error": task.error if str(task.state) == "failed" else None,
        }
        for task_id, task in stored.tasks.items()
    }
    if as_json:
        click.echo(json.dumps({**_run_dict(stored.run), "task_states": tasks}, indent=2))
        return
    r = stored.run
    click.echo(f"run {r.id}  pipeline {r.pipeline}  {_status(r)}")
    click.echo(f"  started {_when(r.started_at)}  finished {_when(r.finished_at)}  "
               f"on {r.user}@{r.host} (pid {r.pid})")
    if r.params:
        click.echo("  params " + " ".join(f"{k}={v}" for k, v in r.params.items()))
    if r.resumed_from:
        click.echo(f"  resumes {r.resumed_from} (reused {len(r.reused)} tasks)")
    if r.resumed_by:
        click.echo(f"  resumed by {r.resumed_by}")
    for task_id, info in tasks.items():
        took = f"{info['duration_s']:.2f}s" if info["duration_s"] is not None else "-"
        line = f"  {task_id:<30} {info['state']:<16} x{info['attempts']}  {took}"
        if info["error"]:
            line += f"  {info['error']}"
        click.echo(line)


@click.command()
@click.argument("run_id")
@click.argument("task_id", required=False)
@click.option("--attempt", type=int, default=None, help="Which attempt (default: the last).")
@store_option
def logs(run_id: str, task_id: str | None, attempt: int | None, store_url: str | None) -> None:
    """Print a task's log and traceback, or without TASK_ID the run's event log."""
    from corral._errors import CorralError

    with _open(store_url) as store:
        try:
            if task_id is None:
                for e in store.events(run_id):
                    data = json.dumps(dict(e.data), default=str) if e.data else ""
                    click.echo(f"{e.at.isoformat()}  {e.kind}  {e.task_id or ''} {data}".rstrip())
                return
            stored = store.load_run(run_id)
        except CorralError as exc:
            raise click.ClickException(str(exc)) from exc
    if task_id not in stored.tasks:
        raise click.ClickException(f"run {run_id!r} has no task {task_id!r}")
    mine = [t for t in stored.transitions if t.task_id == task_id]
    n = attempt or max((t.attempt for t in mine), default=0)
    for t in mine:
        click.echo(f"{t.at.isoformat()}  {t.state}  attempt {t.attempt}"
                   + (f"  {t.error}" if t.error else ""))
    for t in mine:
        if t.attempt != n:
            continue
        if t.log_path:
            path = Path(t.log_path)
            click.echo(f"--- {path}")
            click.echo(path.read_text(errors="replace") if path.exists() else "(log is gone)")
        if t.traceback:
            click.echo("--- traceback")
            click.echo(t.traceback.rstrip())


@click.command()
@click.option("--older-than", "older_than", required=True, help="Age, e.g. 30d, 12h.")
@store_option
def prune(older_than: str, store_url: str | None) -> None:
    """Delete runs that ended longer ago than --older-than, with their stored values."""
    age = parse_age(older_than)
    with _open(store_url) as store:
        pruned = store.prune(age)
    click.echo(f"pruned {len(pruned)} run{'s' if len(pruned) != 1 else ''}")


@click.command()
@click.argument("run_id", required=False)
@click.option("--pipeline", default=None, help="Resume the latest unfinished run of this one.")
@click.option("--dry-run", is_flag=True, help="Only print what would be reused and re-run.")
@store_option
def resume(run_id: str | None, pipeline: str | None, dry_run: bool,
           store_url: str | None) -> None:
    """Finish an unfinished run, reusing every task that already succeeded.

    The DAG is rebuilt from the pipeline file stored with the run and the run's parameters;
    a task re-runs when it did not succeed, its definition changed, or an upstream re-runs.
    """
    import asyncio

    from corral._errors import CorralError
    from corral._runner import Runner
    from corral.store import StoreRecorder, plan_resume

    with _open(store_url) as store:
        try:
            if run_id is None:
                if pipeline is None:
                    raise click.UsageError("give a RUN_ID or --pipeline")
                latest = store.latest_unfinished(pipeline)
                if latest is None:
                    raise click.ClickException(f"no unfinished run of {pipeline!r}")
                run_id = latest.id
            stored = store.load_run(run_id)
            if stored.run.lease_live:
                from corral._errors import RunLocked

                raise RunLocked(run_id, owner=stored.run.lease_owner,
                                lease_until=stored.run.lease_until)
            graph = _rebuild(stored.run)
            plan = plan_resume(graph, stored)
            click.echo(f"resuming {run_id}: {plan}")
            if dry_run:
                return
            recorder = StoreRecorder(store, source_path=stored.run.source_path,
                                     resume_of=run_id)
            runner = Runner(graph, listeners=[recorder], done=plan.reuse,
                            params=dict(stored.run.params), handle_signals=True,
                            log_dir=".corral/logs")
            recorder.attach(runner)
            result = asyncio.run(runner.run())
        except CorralError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"run {result.run_id}: {result.status}")
    if not result.ok:
        raise SystemExit(1)


def _rebuild(run: RunRecord) -> Any:
    """The run's DAG, rebuilt from its pipeline file and parameters."""
    if not run.source_path:
        raise click.ClickException(
            f"run {run.id} was not started from a pipeline file, so it cannot be rebuilt here; "
            "resume it from Python with corral.store.plan_resume")
    from corral import load_pipeline

    pipeline = load_pipeline(run.source_path, params=dict(run.params))
    return pipeline.dag.validate()


COMMANDS = [runs, show, logs, prune, resume]
