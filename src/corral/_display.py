"""What ``corral run`` and ``corral plan`` show a person: the live view, per-task lines, tables.

Two ways to watch a run, chosen by the CLI from where stdout goes:

- a terminal gets :class:`LiveView`, a rich ``Live`` redrawn a few times a second by an asyncio
  task that *polls* :meth:`Runner.snapshot` — counts per state, the running tasks with their
  elapsed time, and an ETA. Polling costs the run loop one cheap call per refresh, however
  many tasks finish in between; the scheduler does no extra work per task (no listener is
  attached, so it does not even record transitions).
- anything else (a pipe, a file, CI) gets :class:`LinePrinter`, a :class:`RunListener` that
  writes one plain line per task as it ends — no cursor movement, no colour codes.

::

    Runner ──snapshot()──> LiveView._poll (asyncio task, every 1/refresh_per_second s) ──> Live
    Runner ──transitions(batch)──> LinePrinter ──> one line per finished task ──> stdout

After the run, :func:`render_summary` prints the outcome table and the realised critical path;
:func:`render_plan` prints a :class:`~corral._plan.Plan`. Everything here is imported only by
commands that need it, so ``corral --help`` never loads rich.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from corral._errors import CommandFailed
from corral._spec import TaskState
from corral._words import short_repr

if TYPE_CHECKING:
    from corral._events import RunInfo, Transition
    from corral._limits import BreakerChange
    from corral._plan import Plan
    from corral._result import RunResult, TaskResult
    from corral._runner import Runner

__all__ = [
    "LinePrinter",
    "LiveView",
    "estimate_remaining",
    "format_seconds",
    "render_plan",
    "render_run_details",
    "render_summary",
]

# How each state is shown: (colour, symbol). Ordered as a person reads a run's progress.
STATE_STYLE: dict[str, tuple[str, str]] = {
    "running": ("cyan", "▶"),
    "ready": ("blue", "·"),
    "pending": ("dim", "·"),
    "retry_wait": ("yellow", "↻"),
    "succeeded": ("green", "✓"),
    "failed": ("red", "✗"),
    "upstream_failed": ("red", "⊘"),
    "skipped": ("magenta", "»"),
    "cancelled": ("yellow", "■"),
}
FINAL_STATES = frozenset(str(s) for s in TaskState if s.is_final)

# Rows beyond which a table is summarised instead of listed in full.
MAX_ROWS = 50
# Running tasks listed in the live view; the rest are counted.
MAX_RUNNING_SHOWN = 8
# Lines of a failed task's log tail shown in the summary.
TAIL_SHOWN = 6


def format_seconds(seconds: float | None) -> str:
    """``0.42s``, ``12.3s``, ``4m05s``, ``2h03m``; ``-`` for unknown."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def estimate_remaining(
    *, total: int, finished: int, elapsed: float, planned_s: float | None
) -> float | None:
    """Seconds until the run ends, as well as can be told from counts alone.

    Before any task has finished there is nothing measured, so the estimate is the plan's
    lower bound (``max(critical path, work / workers)`` from the tasks' ``estimate`` options,
    1 s each when unset) minus the time already spent. Once tasks finish, it is the observed
    rate: ``elapsed / finished`` seconds per task, times the tasks left. The rate folds in
    the real parallelism and the real durations, but treats all tasks alike, so a long tail
    task at the end makes it optimistic; it is a guide, labelled "~" on screen.
    """
    left = total - finished
    if left <= 0:
        return 0.0
    if finished > 0:
        return elapsed / finished * left
    if planned_s is None:
        return None
    return max(0.0, planned_s - elapsed)


def _state_counts(counts: dict[str, int]) -> Text:
    text = Text()
    for state, (colour, symbol) in STATE_STYLE.items():
        n = counts.get(state, 0)
        if n:
            if text:
                text.append("  ")
            text.append(f"{symbol} {n} {state.replace('_', ' ')}", style=colour)
    return text


class LiveView:
    """A live, in-place view of a run on a terminal. Use as ``async with view.watch(runner):``."""

    def __init__(
        self,
        console: Console,
        *,
        pipeline: str,
        total: int,
        planned_s: float | None = None,
        refresh_per_second: float = 4.0,
    ) -> None:
        self.console = console
        self.pipeline = pipeline
        self.total = total
        self.planned_s = planned_s
        self.interval = 1.0 / refresh_per_second

    def render(self, snapshot: dict[str, Any], now: float, run_id: str = "") -> RenderableType:
        """The view for one snapshot (pure: usable from tests)."""
        counts: dict[str, int] = snapshot["counts"]
        finished = sum(n for state, n in counts.items() if state in FINAL_STATES)
        total = snapshot.get("total", self.total)  # a run grows (for_each, plans)
        eta = estimate_remaining(
            total=total, finished=finished, elapsed=now, planned_s=self.planned_s
        )
        head = Text()
        head.append(f"corral run {self.pipeline}", style="bold")
        if run_id:
            head.append(f"  {run_id}", style="dim")
        head.append(f"  elapsed {format_seconds(now)}")
        if eta is not None:
            head.append(f"  ETA ~{format_seconds(eta)}")
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=max(total, 1), completed=finished, width=40),
            Text(f"{finished}/{total}"),
        )
        parts: list[RenderableType] = [head, bar, _state_counts(counts)]
        running: Sequence[tuple[str, float, int]] = snapshot["running"]
        if running:
            table = Table(box=None, padding=(0, 2), show_header=False)
            table.add_column("task", style="cyan", overflow="ellipsis", max_width=60)
            table.add_column("elapsed", justify="right")
            table.add_column("attempt", style="dim")
            # The longest-running first: they are the ones a person is waiting on.
            for task_id, started, attempt in sorted(running, key=lambda r: r[1])[
                :MAX_RUNNING_SHOWN
            ]:
                table.add_row(
                    Text(task_id),
                    format_seconds(max(0.0, now - started)),
                    f"attempt {attempt}" if attempt > 1 else "",
                )
            parts.append(table)
            if len(running) > MAX_RUNNING_SHOWN:
                parts.append(
                    Text(f"  … and {len(running) - MAX_RUNNING_SHOWN} more running", style="dim")
                )
        return Group(*parts)

    @contextlib.asynccontextmanager
    async def watch(self, runner: Runner) -> Any:
        """Show the view while the body runs ``runner``; one last frame when it ends."""
        # redirect_stdout: what a Python task prints appears above the view, not through it.
        live = Live(
            console=self.console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=True,
            redirect_stderr=False,
        )

        def frame() -> RenderableType:
            try:
                now = runner.now()
            except (AssertionError, AttributeError):  # the run has not started yet
                now = 0.0
            return self.render(runner.snapshot(), now, runner.run_id)

        async def poll() -> None:
            while True:
                await asyncio.sleep(self.interval)
                live.update(frame(), refresh=True)

        with live:
            task = asyncio.create_task(poll())
            try:
                yield self
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                live.update(frame(), refresh=True)


class LinePrinter:
    """A :class:`RunListener` writing ``state  task  duration`` per task as it ends.

    For output that is not a terminal: plain text, one line per task, flushed once per batch.
    A retry is shown too (``retry_wait``), with the error that caused it.
    """

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self._started: dict[str, float] = {}

    def run_started(self, run: RunInfo) -> None:
        mode = "fail-fast" if run.fail_fast else "keep-going"
        self.out.write(
            f"run {run.run_id} of {run.graph.name}: {len(run.graph)} tasks, "
            f"concurrency {run.concurrency}, {mode}\n"
        )
        self.out.flush()

    def transitions(self, batch: list[Transition]) -> None:
        lines = []
        for t in batch:
            state = str(t.state)
            if state == "running":
                self._started.setdefault(t.task, t.at)
                continue
            if state not in FINAL_STATES and state != "retry_wait":
                continue
            start = self._started.get(t.task)
            duration = format_seconds(t.at - start) if start is not None else "-"
            line = f"{state:<15} {t.task}  {duration}"
            if state == "retry_wait" and t.error:
                line += f"  (attempt {t.attempt}: {_first_line(t.error)})"
            lines.append(line + "\n")
        if lines:
            self.out.write("".join(lines))
            self.out.flush()

    def breaker_changed(self, change: BreakerChange) -> None:
        self.out.write(f"{'breaker ' + change.state:<15} {change.breaker}  "
                       f"at {format_seconds(change.at)}\n")
        self.out.flush()

    def run_finished(self, result: RunResult) -> None:
        return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _error_text(task: TaskResult) -> Text:
    """The end of what went wrong: the log tail of a failed command, else the error message."""
    err = task.error
    if err is None:
        return Text("")
    if isinstance(err, CommandFailed):
        head = (
            f"killed by signal {-err.exit_code}"
            if err.exit_code < 0
            else f"exit code {err.exit_code}"
        )
        text = Text(head, style="red")
        tail = err.tail.splitlines()[-TAIL_SHOWN:]
        if tail:
            text.append("\n" + "\n".join(tail), style="dim")
        if err.log_path:
            text.append(f"\nlog: {err.log_path}", style="dim")
        return text
    message = task.error_message() or ""
    lines = message.splitlines()[-TAIL_SHOWN:]
    return Text("\n".join(lines), style="red")


def _span(tasks: Iterable[TaskResult]) -> float | None:
    chain = list(tasks)
    if not chain or chain[0].started_at is None or chain[-1].finished_at is None:
        return None
    return (chain[-1].finished_at - chain[0].started_at).total_seconds()


def render_summary(
    console: Console,
    result: RunResult,
    *,
    log_dir: str | None = None,
    reused: Collection[str] = (),
) -> None:
    """The outcome table, the counts and the realised critical path. ``reused`` tasks (of a
    resumed run) are marked as such: they did not run, their stored values were used."""
    tasks = list(result.tasks.values())
    shown = tasks
    hidden_ok = 0
    if len(tasks) > MAX_ROWS:
        # A big run: list what needs attention, count what went well.
        shown = [t for t in tasks if t.state is not TaskState.SUCCEEDED]
        hidden_ok = len(tasks) - len(shown)
    table = Table(
        title=f"{result.pipeline}  {result.run_id}",
        title_justify="left",
        show_lines=any(t.error is not None for t in shown[:MAX_ROWS]),
    )
    table.add_column("task", overflow="fold")
    table.add_column("state")
    table.add_column("duration", justify="right")
    table.add_column("attempts", justify="right")
    table.add_column("error", overflow="fold")
    for t in shown[:MAX_ROWS]:
        state = str(t.state)
        colour, symbol = STATE_STYLE.get(state, ("", ""))
        if t.id in reused:
            state += " (reused)"
        table.add_row(
            Text(t.id),
            Text(f"{symbol} {state}", style=colour),
            format_seconds(t.duration_s),
            str(t.attempts),
            _error_text(t),
        )
    if shown:
        console.print(table)
    more = len(shown) - MAX_ROWS
    if more > 0:
        console.print(f"… and {more} more tasks not listed", style="dim")
    if hidden_ok:
        console.print(f"{hidden_ok} tasks succeeded (not listed)", style="dim")

    status_style = {"succeeded": "bold green", "failed": "bold red"}.get(
        str(result.status), "bold yellow"
    )
    line = Text()
    line.append(str(result.status), style=status_style)
    line.append(f" in {format_seconds(result.duration_s)}  ")
    line.append_text(_state_counts(result.counts()))
    console.print(line)
    bound = result.lower_bound_s
    if bound and str(result.status) == "succeeded":
        console.print(Text(
            f"{result.duration_s / bound:.2f}x its own lower bound "
            f"({format_seconds(bound)}: max of critical path, work / concurrency and each "
            "narrower executor's work / its slots, with the durations the tasks took in this "
            "run)", style="dim"))
    path = result.critical_path
    if path:
        span = _span(result.tasks[t] for t in path)
        ids = path if len(path) <= 12 else [*path[:5], f"… {len(path) - 10} more …", *path[-5:]]
        line = Text()
        line.append("critical path: ", style="bold")
        line.append(" → ".join(ids))
        line.append(
            f"  ({len(path)} task{'s' if len(path) != 1 else ''}, {format_seconds(span)}"
            " from first start to last end)",
            style="dim",
        )
        console.print(line)
    if result.breakers:
        _render_breakers(console, result.breakers)
    if log_dir and any(t.log_path for t in tasks):
        console.print(Text(f"logs: {log_dir}", style="dim"))


def _render_breakers(console: Console, changes: Sequence[tuple[str, str, float]]) -> None:
    """One line per circuit breaker that changed: its states in order, with their times
    (``changes``: BreakerChange, or the same as plain tuples from a stored run)."""
    for name in dict.fromkeys(c[0] for c in changes):
        line = Text()
        line.append(f"circuit breaker {name}: ", style="bold")
        line.append(", ".join(f"{state} at {format_seconds(at)}"
                              for breaker, state, at in changes if breaker == name))
        console.print(line)


def _ids_preview(ids: Sequence[str], limit: int = 6) -> str:
    if len(ids) <= limit:
        return ", ".join(ids)
    return ", ".join(ids[:limit]) + f", … (+{len(ids) - limit})"


def render_plan(console: Console, plan: Plan, *, pipeline: str) -> None:
    """The plan, compact: a huge DAG's levels are summarised, not listed in full."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("pipeline", Text(pipeline))
    head.add_row("tasks", f"{plan.n_tasks} ({plan.n_edges} edges)")
    head.add_row("levels", f"{len(plan.levels)} (width {plan.width})")
    path = plan.critical_path
    ids = path if len(path) <= 12 else [*path[:5], f"… {len(path) - 10} more …", *path[-5:]]
    head.add_row(
        "critical path", Text(f"{format_seconds(plan.critical_path_s)}: " + " → ".join(ids))
    )
    head.add_row("total work", format_seconds(plan.work_s))
    head.add_row(
        "lower bound",
        f"{format_seconds(plan.lower_bound_s)} with {plan.workers} workers "
        f"(max of critical path, work / workers)",
    )
    console.print(head)
    levels = plan.levels
    if not levels:
        return
    table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
    table.add_column("level", justify="right")
    table.add_column("tasks", justify="right")
    table.add_column("ids", overflow="ellipsis", no_wrap=True)
    # A few levels at each end tell the shape; the middle of a thousand-level DAG does not.
    shown: list[int | None] = list(range(len(levels)))
    if len(levels) > 20:
        shown = [*range(10), None, *range(len(levels) - 5, len(levels))]
    for k in shown:
        if k is None:
            table.add_row("…", "", Text(f"{len(levels) - 15} more levels", style="dim"))
            continue
        table.add_row(str(k), str(len(levels[k])), Text(_ids_preview(levels[k])))
    console.print(table)


def render_run_details(console: Console, details: dict[str, Any]) -> None:
    """A stored run (``corral show``): header, one row per task (its attempts and timings,
    each failed attempt's error), and the realised critical path. ``details`` is the plain
    data of :func:`corral.cli._history.run_details`."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("run", Text(f"{details['run_id']}  ({details['pipeline']})"))
    status = str(details["status"])
    if details["alive"]:
        status += " (alive)"
    head.add_row("status", Text(status))
    head.add_row("started", _local(details["started_at"]))
    head.add_row("finished", _local(details["finished_at"]))
    head.add_row("duration", format_seconds(details["duration_s"]))
    head.add_row("on", f"{details['user']}@{details['host']} (pid {details['pid']})")
    if details["params"]:
        head.add_row("params", Text(" ".join(f"{k}={v}" for k, v in details["params"].items())))
    if details["resumed_from"]:
        head.add_row("resumes", f"{details['resumed_from']} (reused {len(details['reused'])})")
    if details["resumed_by"]:
        head.add_row("resumed by", details["resumed_by"])
    for key, value in list(details.get("context", {}).items())[:MAX_ROWS]:
        head.add_row("context" if key == next(iter(details["context"])) else "",
                     Text(f"{key} = {short_repr(value)}"))
    console.print(head)
    table = Table(show_lines=False)
    table.add_column("task", overflow="fold")
    table.add_column("state")
    table.add_column("attempts", justify="right")
    table.add_column("started", justify="right")
    table.add_column("duration", justify="right")
    table.add_column("executor")
    table.add_column("error", overflow="fold")
    tasks: dict[str, Any] = details["tasks"]
    for task_id, info in list(tasks.items())[: MAX_ROWS * 4]:
        state = info["state"]
        colour, symbol = STATE_STYLE.get(state, ("", ""))
        label = f"{symbol} {state}" + (" (reused)" if info["reused"] else "")
        attempts = info["attempts"]
        # One line per earlier attempt that did not succeed, so a retry shows what it fixed.
        errors = [
            f"#{a['attempt']} {a['state']}: {_first_line(a['error'] or '')}"
            for a in attempts
            if a["error"]
        ]
        started = info["started_s"]
        table.add_row(
            Text(task_id),
            Text(label, style=colour),
            str(len(attempts)),
            f"+{format_seconds(started)}" if started is not None else "-",
            format_seconds(info["duration_s"]),
            attempts[-1]["executor"] if attempts else "",
            Text("\n".join(errors), style="red"),
        )
    console.print(table)
    if len(tasks) > MAX_ROWS * 4:
        console.print(f"… and {len(tasks) - MAX_ROWS * 4} more tasks (see --json)", style="dim")
    path: list[str] = details["critical_path"]
    if path:
        ids = path if len(path) <= 12 else [*path[:5], f"… {len(path) - 10} more …", *path[-5:]]
        line = Text()
        line.append("critical path: ", style="bold")
        line.append(" → ".join(ids))
        console.print(line)
    changes = details.get("breakers") or []
    if changes:
        _render_breakers(console, [(c["breaker"], c["state"], c["at"]) for c in changes])


def _local(iso: str | None) -> str:
    if iso is None:
        return "-"
    from datetime import datetime

    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
