"""Commands that read the run store: ``runs``, ``show``, ``logs`` and ``prune``.

Each opens the store (``--store`` / ``CORRAL_STORE``, default ``.corral/corral.db``), calls
one or two :class:`~corral.store.Store` methods and prints. Reading commands never create a
store: with no SQLite file there are simply no runs. Errors: an unknown run or task exits 2,
a broken store 3 (see ``corral --help``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from corral._plan import realised_critical_path
from corral._result import recorded_breakers
from corral._spec import ENDS_ATTEMPT
from corral.cli._exits import UserError
from corral.cli._options import Duration, json_option, open_run_store, store_option

if TYPE_CHECKING:
    from corral.store import RunRecord, Store, StoredRun

__all__ = ["logs", "pick_attempt", "prune", "run_details", "runs", "show", "when"]


# States that end an attempt (the transition carries its duration), by name.
_ENDS = frozenset(str(state) for state in ENDS_ATTEMPT)


@contextlib.contextmanager
def _reading(url: str | None) -> Iterator[Store | None]:
    """The store to read from, or None when there is none yet (nothing is created)."""
    store = open_run_store(url, create=False)
    try:
        yield store
    finally:
        if store is not None:
            store.close()


def _load_run(store: Store | None, run_id: str, url: str | None) -> StoredRun:
    from corral._errors import RunNotFound
    from corral.store import resolve_url

    if store is None:
        raise RunNotFound(f"no run {run_id!r}: there is no store at {resolve_url(url)} yet")
    return store.load_run(run_id)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _run_dict(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "pipeline": run.pipeline,
        "status": str(run.observed_status),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration_s": run.duration_s,
        "alive": run.lease_live,
        "host": run.host,
        "user": run.user,
        "pid": run.pid,
        "params": dict(run.params),
        "source_path": run.source_path,
        "resumed_from": run.resumed_from,
        "resumed_by": run.resumed_by,
        "n_tasks": len(run.tasks),
    }


# ---------------------------------------------------------------------------- runs


@click.command()
@click.option(
    "--status",
    type=click.Choice(["running", "succeeded", "failed", "interrupted", "crashed"]),
    envvar="CORRAL_STATUS",
    show_envvar=True,
    help="Only runs in this state (crashed: ended without recording it, so no longer alive).",
)
@click.option(
    "--pipeline", envvar="CORRAL_PIPELINE", show_envvar=True, help="Only runs of this pipeline."
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    envvar="CORRAL_LIMIT",
    show_envvar=True,
    help="At most this many runs.",
)
@store_option
@json_option
def runs(
    status: str | None, pipeline: str | None, limit: int, store_url: str | None, as_json: bool
) -> None:
    """List recorded runs, newest first."""
    with _reading(store_url) as store:
        found = (
            [] if store is None else store.list_runs(status=status, pipeline=pipeline, limit=limit)
        )
    if as_json:
        click.echo(json.dumps([_run_dict(r) for r in found], indent=2))
        return
    if not found:
        click.echo("no runs")
        return
    width = max(len("PIPELINE"), *(len(r.pipeline) for r in found))
    id_width = max(len(r.id) for r in found)
    when_width = max(len(when(r.started_at)) for r in found)
    click.echo(
        f"{'RUN':<{id_width}}  {'PIPELINE':<{width}}  {'STATUS':<11}  "
        f"{'STARTED':<{when_width}}  {'DURATION':>8}"
    )
    for r in found:
        took = f"{r.duration_s:.1f}s" if r.duration_s is not None else "-"
        line = (
            f"{r.id:<{id_width}}  {r.pipeline:<{width}}  {r.observed_status!s:<11}  "
            f"{when(r.started_at):<{when_width}}  {took:>8}"
        )
        if r.resumed_by:
            line += f"  (resumed by {r.resumed_by})"
        click.echo(line)


# ---------------------------------------------------------------------------- show


def run_details(stored: StoredRun) -> dict[str, Any]:
    """A run as plain data: its record, each task's attempts and timings, and the realised
    critical path (rebuilt from the history, so a crashed run has one too)."""
    run = stored.run
    reused = set(run.reused)
    attempts: dict[str, list[dict[str, Any]]] = {t: [] for t in stored.tasks}
    end_clock: dict[str, float] = {}
    first_clock: dict[str, float] = {}
    for t in stored.transitions:
        state = str(t.state)
        mine = attempts[t.task_id]
        if state == "running":
            first_clock.setdefault(t.task_id, t.clock)
            mine.append(
                {
                    "attempt": t.attempt,
                    "state": "running",
                    "started_at": _iso(t.at),
                    "finished_at": None,
                    "duration_s": None,
                    "exit_code": None,
                    "error": None,
                    "log": t.log_path,
                    "executor": t.executor,
                    "worker": t.worker,
                    "traceback": None,
                }
            )
        elif state in _ENDS and mine and mine[-1]["finished_at"] is None:
            mine[-1].update(
                state=state,
                finished_at=_iso(t.at),
                duration_s=t.duration_s,
                exit_code=t.exit_code,
                error=t.error,
                traceback=t.traceback,
            )
            end_clock[t.task_id] = t.clock
    deps = {t.id: t.deps for t in run.tasks}
    tasks: dict[str, Any] = {}
    for task_id, task in stored.tasks.items():
        mine = attempts[task_id]
        last = mine[-1] if mine else None
        first = first_clock.get(task_id)
        end = end_clock.get(task_id)
        tasks[task_id] = {
            "state": str(task.state or "pending"),
            "reused": task_id in reused,
            "attempts": mine,
            "started_s": first,  # on the run's clock: seconds after it started
            "duration_s": last["duration_s"] if last else None,
            "span_s": end - first if first is not None and end is not None else None,
            "error": task.error if task.state is not None and str(task.state) == "failed" else None,
        }
    return {
        **_run_dict(run),
        "reused": list(run.reused),
        "critical_path": realised_critical_path(end_clock, deps.__getitem__),
        "context": dict(stored.context),
        "tasks": tasks,
    }


@click.command()
@click.argument("run_id")
@store_option
@json_option
def show(run_id: str, store_url: str | None, as_json: bool) -> None:
    """Show a run: each task's state, attempts and timings, and the realised critical path."""
    with _reading(store_url) as store:
        details = run_details(_load_run(store, run_id, store_url))
        assert store is not None
        details["breakers"] = recorded_breakers(store.events(run_id))
    if as_json:
        click.echo(json.dumps(details, indent=2, default=str))
        return
    from rich.console import Console

    from corral._display import render_run_details

    render_run_details(Console(highlight=False), details)


# ---------------------------------------------------------------------------- logs


@click.command()
@click.argument("run_id")
@click.argument("task_id", required=False)
@click.option(
    "--attempt",
    type=click.IntRange(min=1),
    envvar="CORRAL_ATTEMPT",
    show_envvar=True,
    help="Which attempt  [default: the last]",
)
@store_option
def logs(run_id: str, task_id: str | None, attempt: int | None, store_url: str | None) -> None:
    """Print the log file of a task's attempt; without TASK_ID, the run's event log."""
    with _reading(store_url) as store:
        stored = _load_run(store, run_id, store_url)
        if task_id is None:
            assert store is not None
            for e in store.events(run_id):
                data = json.dumps(dict(e.data), default=str) if e.data else ""
                click.echo(f"{e.at.isoformat()}  {e.kind}  {e.task_id or ''} {data}".rstrip())
            return
    try:
        chosen = pick_attempt(stored, task_id, attempt)
    except LookupError as exc:
        raise UserError(str(exc)) from None
    n = chosen["attempt"]
    if not chosen["log"]:
        message = (
            f"attempt {n} of task {task_id!r} (run {run_id}) has no log file: the run kept "
            "no logs (it was started with log_dir=None)"
        )
        if chosen["traceback"]:
            message += "; its error was:\n" + chosen["traceback"].rstrip()
        raise UserError(message)
    path = Path(chosen["log"])
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        if chosen["executor"] in ("thread", "async"):  # its log is made on its first print
            click.echo(f"(attempt {n} of task {task_id!r} wrote no output)", err=True)
            return
        raise UserError(f"the log of attempt {n} of task {task_id!r} is gone: {path}") from None
    click.echo(text, nl=False)


def pick_attempt(stored: StoredRun, task_id: str, attempt: int | None) -> dict[str, Any]:
    """The attempt of ``task_id`` whose log is wanted (``attempt`` None: the last), as
    :func:`run_details` shows it. :class:`LookupError` saying why there is none."""
    run_id = stored.run.id
    if task_id not in stored.tasks:
        known = ", ".join(stored.tasks)
        raise LookupError(f"run {run_id} has no task {task_id!r} (its tasks: {known})")
    details = run_details(stored)["tasks"][task_id]
    tried = details["attempts"]
    if details["reused"]:
        raise LookupError(
            f"task {task_id!r} did not run in run {run_id}: its value was reused "
            f"from run {stored.run.resumed_from} (corral logs "
            f"{stored.run.resumed_from} {task_id})"
        )
    if not tried:
        raise LookupError(f"task {task_id!r} never ran in run {run_id} ({details['state']})")
    chosen = (
        tried[-1] if attempt is None else next((a for a in tried if a["attempt"] == attempt), None)
    )
    if chosen is None:
        raise LookupError(
            f"task {task_id!r} of run {run_id} has attempts "
            f"1 to {tried[-1]['attempt']}, not {attempt}"
        )
    return dict(chosen)


# ---------------------------------------------------------------------------- prune


@click.command()
@click.option(
    "--older-than",
    "older_than",
    type=Duration(),
    required=True,
    envvar="CORRAL_OLDER_THAN",
    show_envvar=True,
    help="Age, e.g. 30d, 12h, 90m.",
)
@store_option
def prune(older_than: float, store_url: str | None) -> None:
    """Delete runs that ended longer ago than --older-than, with their stored values.

    Runs still alive are kept; their task logs (under --log-dir) are not touched.
    """
    with _reading(store_url) as store:
        pruned = [] if store is None else store.prune(older_than)
    click.echo(f"pruned {len(pruned)} run{'s' if len(pruned) != 1 else ''}")
