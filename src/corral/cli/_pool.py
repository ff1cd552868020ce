"""``corral worker --min-workers N --max-workers M``: a pool of worker processes on this host,
scaled on their load (:mod:`corral.fleet._pool`; the policy: :mod:`corral.fleet._autoscale`).
See docs/fleet.md, "Pools".
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import click

from corral._signal_handlers import give_back, take
from corral.cli._exits import ExecutorError, ExitCode, UserError
from corral.cli._options import Duration

if TYPE_CHECKING:
    from corral.fleet._autoscale import ScalingPolicy
    from corral.fleet._pool_metrics import PoolMetrics

__all__ = ["PoolSettings", "pool_options", "run_pool"]


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """The pool's options as the command line gave them (None: not given)."""

    min_workers: int | None
    max_workers: int | None
    target: float
    cooldown_s: float
    interval_s: float
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    @property
    def wanted(self) -> bool:
        """A pool was asked for (else ``corral worker`` is one worker, as always)."""
        return self.min_workers is not None or self.max_workers is not None


def pool_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The pool's options, given to the command as one ``pool`` argument."""

    @functools.wraps(f)
    def command(*args: Any, min_workers: int | None, max_workers: int | None,
                target_utilisation: float, scale_cooldown: float, scale_interval: float,
                metrics_port: int | None, metrics_host: str, **kwargs: Any) -> Any:
        pool = PoolSettings(min_workers, max_workers, target_utilisation, scale_cooldown,
                            scale_interval, metrics_port, metrics_host)
        if metrics_port is not None and not pool.wanted:
            raise UserError("--metrics-port is a pool's: give --min-workers or --max-workers "
                            "too")
        return f(*args, pool=pool, **kwargs)

    for option in reversed([
        click.option("--min-workers", type=click.IntRange(min=0), envvar="CORRAL_MIN_WORKERS",
                     show_envvar=True, help="Run a pool: at least this many worker processes "
                     "[default with --max-workers: 1]"),
        click.option("--max-workers", type=click.IntRange(min=1), envvar="CORRAL_MAX_WORKERS",
                     show_envvar=True, help="Run a pool: at most this many worker processes, "
                     "started as the load asks  [default with --min-workers: the minimum]"),
        click.option("--target-utilisation", type=click.FloatRange(0, 1, min_open=True),
                     default=0.7, show_default=True, envvar="CORRAL_TARGET_UTILISATION",
                     show_envvar=True, help="A pool's aim: (running + queued) / its slots. "
                     "It grows over 1.2x this, shrinks under 0.5x."),
        click.option("--scale-cooldown", type=Duration(), default="30s", show_default=True,
                     envvar="CORRAL_SCALE_COOLDOWN", show_envvar=True,
                     help="After a pool grows or shrinks, it holds its size this long."),
        click.option("--scale-interval", type=Duration(), default="5s", show_default=True,
                     envvar="CORRAL_SCALE_INTERVAL", show_envvar=True,
                     help="How often a pool measures its load."),
        click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
                     envvar="CORRAL_POOL_METRICS_PORT", show_envvar=True,
                     help="Serve the pool's Prometheus metrics (GET /metrics) on this port "
                     "(needs the server extra)."),
        click.option("--metrics-host", default="127.0.0.1", show_default=True,
                     envvar="CORRAL_POOL_METRICS_HOST", show_envvar=True,
                     help="The address --metrics-port listens on (0.0.0.0: every interface)."),
    ]):
        command = option(command)
    return command


def run_pool(settings: PoolSettings, *, broker: str, worker_args: list[str],
             queues: tuple[str, ...], concurrency: int, grace: float,
             heartbeat_timeout: float) -> NoReturn:
    """Supervise the pool until SIGINT/SIGTERM; exits as a worker does (128 + signal)."""
    from corral._errors import BrokenExecutor
    from corral.fleet._autoscale import ScalingPolicy
    from corral.fleet._broker import open_broker
    from corral.fleet._pool import Pool, PoolOptions

    low = 1 if settings.min_workers is None else settings.min_workers
    high = max(low, 1) if settings.max_workers is None else settings.max_workers
    if high < low:
        raise UserError(f"--max-workers ({high}) is under --min-workers ({low})")
    try:
        policy = ScalingPolicy(min_workers=low, max_workers=high, target=settings.target,
                               cooldown_s=settings.cooldown_s)
    except ValueError as exc:
        raise UserError(f"--min-workers/--max-workers/--target-utilisation: {exc}") from None
    if not settings.interval_s > 0:
        raise UserError(f"--scale-interval must be > 0, not {settings.interval_s:g}")
    options = PoolOptions(worker_args=tuple(worker_args), worker_env={"CORRAL_BROKER": broker},
                          queues=queues, concurrency=concurrency, policy=policy,
                          interval_s=settings.interval_s, grace_s=grace)
    metrics = None if settings.metrics_port is None else _serve_metrics(settings, policy)
    conn = open_broker(broker, heartbeat_timeout=heartbeat_timeout)  # BrokenBroker: exit 3
    pool = Pool(conn, options, observer=metrics)

    def on_signal(sig: int, _frame: Any) -> None:
        pool.stop(sig)

    previous = take((signal.SIGINT, signal.SIGTERM), on_signal)
    try:
        sig = pool.run()
    except BrokenExecutor as exc:
        raise ExecutorError(str(exc)) from None
    finally:
        give_back(previous)
        conn.close()
    raise click.exceptions.Exit(128 + sig if sig else int(ExitCode.OK))


def _serve_metrics(settings: PoolSettings, policy: ScalingPolicy) -> PoolMetrics:
    """The pool's metrics, served on --metrics-port; exit 2 when the extra is missing or the
    port cannot be had."""
    try:
        from corral.fleet._pool_metrics import PoolMetrics
    except ImportError as exc:
        raise UserError("--metrics-port needs prometheus-client: pip install "
                        f"'corral[server]' ({exc.name} is missing)") from None
    metrics = PoolMetrics()
    metrics.bounds(policy.min_workers, policy.max_workers, policy.target)
    assert settings.metrics_port is not None
    try:
        metrics.serve(settings.metrics_port, settings.metrics_host)
    except OSError as exc:
        raise UserError(f"--metrics-port {settings.metrics_port}: cannot listen on "
                        f"{settings.metrics_host}: {exc.strerror or exc}") from None
    return metrics
