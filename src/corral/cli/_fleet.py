"""The fleet's commands: ``worker`` (run attempts from a broker), ``workers`` (list them),
``dlq`` (the dead-letter queue: list, show, retry, purge). See docs/fleet.md.

Every command takes ``--broker URL`` (or ``CORRAL_BROKER``). A broker that cannot be used
exits 3 with the reason; a worker's bad ``--queue`` or ``--resources`` exits 2.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from corral.cli._exits import ExitCode, UserError
from corral.cli._options import Duration, emit_json, json_option
from corral.cli._pool import PoolSettings, pool_options

if TYPE_CHECKING:
    from corral.fleet._broker import Broker, DeadLetter

__all__ = ["broker_option", "dlq", "parse_resources", "worker", "workers"]

F = TypeVar("F", bound=Callable[..., Any])

QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")


def broker_option(f: F) -> F:
    return click.option(
        "--broker",
        metavar="URL",
        envvar="CORRAL_BROKER",
        show_envvar=True,
        required=True,
        help="The fleet's broker: redis://HOST:PORT/DB or postgresql://[USER@]HOST:PORT/DB",
    )(f)


def _connect(url: str, heartbeat_timeout: float | None = None) -> Broker:
    from corral.fleet._broker import open_broker

    return open_broker(url, heartbeat_timeout=heartbeat_timeout)  # BrokenBroker: exit 3


def parse_resources(text: str) -> dict[str, float]:
    """``gpu=1,mem=2`` as a dict; raises ValueError saying what is wrong."""
    out: dict[str, float] = {}
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        name, sep, amount = pair.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"{pair!r} is not NAME=AMOUNT (e.g. gpu=1,mem_gb=16)")
        try:
            value = float(amount)
        except ValueError:
            raise ValueError(f"{pair!r}: {amount!r} is not a number") from None
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"{pair!r}: the amount must be a number >= 0")
        out[name] = value
    return out


# ---------------------------------------------------------------------- worker


@click.command()
@broker_option
@click.option("-c", "--concurrency", type=click.IntRange(min=1), envvar="CORRAL_CONCURRENCY",
              show_envvar=True, help="Attempts run at once  [default: the CPU count]")
@click.option("-q", "--queue", "queues", multiple=True, metavar="NAME",
              envvar="CORRAL_QUEUES", show_envvar=True,
              help="A queue to take attempts from (repeat for several)  [default: default]")
@click.option("--resources", default="", metavar="NAME=AMOUNT,...",
              envvar="CORRAL_WORKER_RESOURCES", show_envvar=True,
              help="What this worker offers besides its CPUs and memory (gpu=1,...): an "
              "attempt runs here only if what it asks for fits.")
@click.option("--heartbeat-timeout", type=Duration(), default="10s",
              envvar="CORRAL_HEARTBEAT_TIMEOUT", show_envvar=True,
              help="A worker silent this long is taken for dead: its attempts go to others.")
@click.option("--max-deliveries", type=click.IntRange(min=1), default=3,
              envvar="CORRAL_MAX_DELIVERIES", show_envvar=True,
              help="An attempt handed out more often (its workers died) is dead-lettered.")
@click.option("--max-value-size", type=click.IntRange(min=1), default=16 * 1024 * 1024,
              metavar="BYTES", envvar="CORRAL_MAX_VALUE_SIZE", show_envvar=True,
              help="The largest value (pickled) a task may send back.")
@click.option("--grace", type=Duration(), default="10s", envvar="CORRAL_WORKER_GRACE",
              show_envvar=True,
              help="On Ctrl-C, how long running attempts may finish before they are handed "
              "back.")
@click.option("--weight", type=click.IntRange(min=0), default=1, envvar="CORRAL_WORKER_WEIGHT",
              show_envvar=True,
              help="This worker's share of a queue balanced with the weighted strategy "
              "(0: none).")
@click.option("--health-window", type=Duration(), default="5m", envvar="CORRAL_HEALTH_WINDOW",
              show_envvar=True,
              help="Its health (corral workers) is judged on the attempts it finished this "
              "long ago at most.")
# A pool's own, on the command lines of the workers it starts (docs/fleet.md, "Pools").
@click.option("--pool-id", hidden=True, default=None)
@click.option("--pool-pid", type=int, hidden=True, default=None)
@click.option("--pool-death-signal", is_flag=True, hidden=True)
@pool_options
def worker(broker: str, concurrency: int | None, queues: tuple[str, ...], resources: str,
           heartbeat_timeout: float, max_deliveries: int, max_value_size: int,
           grace: float, weight: int, health_window: float, pool_id: str | None,
           pool_pid: int | None, pool_death_signal: bool, pool: PoolSettings) -> None:
    """Run attempts of `corral run --broker` runs from the broker's queues, until Ctrl-C.

    Ctrl-C (or SIGTERM) stops taking work, lets what runs finish for --grace, then hands the
    rest back to the fleet; a second Ctrl-C hands everything back at once.

    With --min-workers/--max-workers: a pool of that many worker processes, scaled on their
    load (docs/fleet.md, "Pools").
    """
    import asyncio

    from corral.fleet._worker import Worker, WorkerOptions

    names = tuple(dict.fromkeys(q for value in queues for q in value.split(",") if q)) \
        or ("default",)
    bad = [q for q in names if not QUEUE_NAME.fullmatch(q)]
    if bad:
        raise UserError(f"not a queue name: {bad[0]!r} (letters, digits, '_', '.', '-'; "
                        "up to 100)")
    try:
        offered = parse_resources(resources)
    except ValueError as exc:
        raise UserError(f"--resources: {exc}") from None
    if not health_window > 0:
        raise UserError(f"--health-window must be > 0, not {health_window:g}")
    kw: dict[str, Any] = {} if concurrency is None else {"concurrency": concurrency}
    if pool.wanted:
        from corral.cli._pool import run_pool

        n = concurrency or WorkerOptions().concurrency
        args = ["-c", str(n), *(a for q in names for a in ("-q", q)),
                "--resources", resources, "--heartbeat-timeout", f"{heartbeat_timeout!r}",
                "--max-deliveries", str(max_deliveries), "--max-value-size",
                str(max_value_size), "--grace", f"{grace!r}", "--weight", str(weight),
                "--health-window", f"{health_window!r}"]
        run_pool(pool, broker=broker, worker_args=args, queues=names, concurrency=n,
                 grace=grace, heartbeat_timeout=heartbeat_timeout)
    if pool_pid is not None:  # a pool's worker: it ends with its pool
        from corral.fleet._orphan import die_with_parent, orphaned

        if pool_death_signal:
            die_with_parent()
        if orphaned(pool_pid):  # the pool died before we asked for the signal
            click.echo(f"corral worker: its pool (pid {pool_pid}) is gone: not starting",
                       err=True)
            raise click.exceptions.Exit(int(ExitCode.OK))
    options = WorkerOptions(queues=names, resources=offered, max_deliveries=max_deliveries,
                            max_value_bytes=max_value_size, grace=grace, weight=weight,
                            health_window=health_window, pool=pool_id, supervisor=pool_pid,
                            **kw)
    conn = _connect(broker, heartbeat_timeout)
    w = Worker(conn, options)
    click.echo(f"corral worker {w.id}: queues {', '.join(names)}, concurrency "
               f"{options.concurrency}, broker {_shown(broker)}", err=True)
    try:
        sig = asyncio.run(w.run(handle_signals=True))
    finally:
        conn.close()
    raise click.exceptions.Exit(128 + sig if sig else int(ExitCode.OK))


def _shown(url: str) -> str:
    from corral.fleet._broker import safe_url

    return safe_url(url)


# ---------------------------------------------------------------------- workers


@click.command()
@broker_option
@json_option
@click.option("--max-error-rate", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              envvar="CORRAL_MAX_ERROR_RATE", show_envvar=True,
              help="A worker whose recent attempts (its --health-window) failed more often "
              "than this is degraded.")
@click.option("--max-latency", type=Duration(), default=None,
              envvar="CORRAL_MAX_LATENCY", show_envvar=True,
              help="A worker whose recent attempts took longer on average is degraded  "
              "[default: latency is not judged]")
def workers(broker: str, as_json: bool, max_error_rate: float,
            max_latency: float | None) -> None:
    """List the fleet's workers: id, health, queues, running, recent and lifetime attempts
    finished and failed, last beat.

    Health: starting, healthy, degraded (the error rate or mean latency of the attempts it
    finished in its recent window, 5 minutes by default, over its threshold, once 10 finished
    in it), unhealthy (silent past the heartbeat timeout), stopping."""
    from corral.fleet._health import Health, HealthThresholds, assess, span
    from corral.fleet._summary import pools_of, read_sample

    conn = _connect(broker)
    try:
        try:
            limits = HealthThresholds(heartbeat_timeout=conn.heartbeat_timeout,
                                      max_error_rate=max_error_rate, max_latency_s=max_latency)
        except ValueError as exc:
            raise UserError(f"--max-latency: {exc}") from None
        sample = read_sample(conn) if as_json else None
        found = list(sample.workers) if sample is not None else conn.workers()
    finally:
        conn.close()
    now = sample.at if sample is not None else time.time()
    health = [assess(w, now, limits) for w in found]
    if as_json:
        emit_json({"workers": [{
            "id": w.id, "host": w.host, "pid": w.pid, "pool": w.pool, "queues": list(w.queues),
            "concurrency": w.concurrency, "resources": dict(w.resources),
            "running": w.running, "done": w.done, "failed": w.failed,
            "started_at": _when(w.started_at), "last_beat": _when(w.last_beat),
            "state": w.state, "health": h.as_dict()} for w, h in zip(found, health, strict=True)],
            "by_health": {state.value: sum(h.state is state for h in health)
                          for state in Health},
            # One per queue served (as GET /health/orchestration has them; throughput: the
            # workers' lifetime rate), and how full the broker is.
            "pools": pools_of(sample, None, limits) if sample is not None else [],
            "saturation": round(sample.saturation, 4) if sample is not None else None})
        return
    if not found:
        click.echo("no workers")
        return
    # RECENT: failed/finished in its window (what its health is judged on); DONE and FAILED:
    # over its life.
    click.echo(f"{'WORKER':<32} {'HEALTH':<10} {'QUEUES':<16} {'RUNNING':>9} "
               f"{'RECENT':>14} {'DONE':>8} {'FAILED':>7} LAST BEAT")
    for w, h in zip(found, health, strict=True):
        recent = ("-" if h.window_s is None else
                  f"{h.recent_failed}/{h.recent_done} in {span(h.window_s)}")
        click.echo(f"{w.id:<32} {h.state.value:<10} {','.join(w.queues):<16} "
                   f"{w.running:>4}/{w.concurrency:<4} {recent:>14} {w.done:>8} {w.failed:>7} "
                   f"{now - w.last_beat:.1f}s ago")


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------- dlq


@click.group()
def dlq() -> None:
    """The dead-letter queue: attempts the fleet gave up on (handed out too often, their
    workers dying; or no worker offers what they ask for)."""


def _letter(d: DeadLetter) -> dict[str, Any]:
    return {"id": d.id, "attempt": d.attempt, "run_id": d.run_id, "task": d.task_id,
            "queue": d.queue, "reason": d.reason, "history": list(d.history),
            "at": _when(d.at)}


@dlq.command("list")
@broker_option
@json_option
def dlq_list(broker: str, as_json: bool) -> None:
    """List dead letters, oldest first."""
    conn = _connect(broker)
    try:
        letters = conn.dead_letters()
    finally:
        conn.close()
    if as_json:
        emit_json({"dead_letters": [_letter(d) for d in letters]})
        return
    if not letters:
        click.echo("no dead letters")
        return
    for d in letters:
        click.echo(f"{d.id}  {d.run_id}  {d.task_id}  [{d.queue}]  {d.reason}")


@dlq.command("show")
@broker_option
@json_option
@click.argument("entry")
def dlq_show(broker: str, as_json: bool, entry: str) -> None:
    """Show one dead letter: its attempt, why, and its history."""
    conn = _connect(broker)
    try:
        letter = conn.dead_letter_entry(entry)
    finally:
        conn.close()
    if letter is None:
        raise UserError(f"no dead letter {entry!r} (corral dlq list shows them)")
    if as_json:
        emit_json(_letter(letter))
        return
    for key, value in _letter(letter).items():
        if key != "history":
            click.echo(f"{key + ':':<9} {value}")
    click.echo("history:")
    for line in letter.history:
        click.echo(f"  - {line}")


@dlq.command("retry")
@broker_option
@json_option
@click.argument("entries", nargs=-1, required=True)
def dlq_retry(broker: str, as_json: bool, entries: tuple[str, ...]) -> None:
    """Queue dead letters again (their delivery counts start over).

    The run was told the attempt failed when it was dead-lettered, and went on as the task's
    retries said: a retried attempt runs for its effects, and its outcome is not recorded in
    the run."""
    conn = _connect(broker)
    try:
        missing = [e for e in entries if conn.dead_letter_entry(e) is None]
        if missing:
            raise UserError(f"no dead letter {missing[0]!r} (corral dlq list shows them)")
        queued = [conn.retry_dead_letter(e) for e in entries]
    finally:
        conn.close()
    if as_json:
        emit_json({"retried": [m.id for m in queued if m is not None]})
        return
    for m in queued:
        if m is not None:
            click.echo(f"queued again: {m.task_id} (attempt {m.id}) on {m.queue}")


@dlq.command("purge")
@broker_option
@json_option
@click.argument("entries", nargs=-1)
def dlq_purge(broker: str, as_json: bool, entries: tuple[str, ...]) -> None:
    """Drop dead letters: those named (ENTRY ...), or `all` of them."""
    purge_all = entries == ("all",)
    if not entries:
        raise UserError("name the dead letters to drop, or say `all`")
    conn = _connect(broker)
    try:
        n = conn.purge_dead_letters(None if purge_all else list(entries))
    finally:
        conn.close()
    if as_json:
        emit_json({"purged": n})
    else:
        click.echo(f"purged {n} dead letter{'s' if n != 1 else ''}")
