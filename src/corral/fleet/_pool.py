"""A pool: ``corral worker --min-workers N --max-workers M`` supervising worker processes.

The supervisor runs no attempts itself. It starts ``min_workers`` real ``corral worker``
processes (each with the pool's broker, queues and concurrency), then every ``interval_s``::

    reap: a worker that exited unasked is replaced at once (a line says so)
    measure: running = what the pool's workers said at their last beat (the broker's
             registry, matched by host and pid); waiting = its share of the queues' depth,
             by its live capacity beside every other live worker of those queues, other
             pools' included (corral.fleet._share); each worker's health
             (corral.fleet._health): one alive but silent past the heartbeat timeout is
             killed (the next step replaces it)
    decide: corral.fleet._autoscale.decide (utilisation against the target, min/max,
            hysteresis, cooldown) -> a line with the decision and its reason
    act: up: start workers; down: SIGTERM the idlest (a worker's own graceful stop:
         it takes nothing more, finishes what runs within its --grace, hands back the rest),
         SIGKILL one still there ``grace + kill_after_s`` later

Workers run in sessions of their own, so a Ctrl-C at the terminal reaches the supervisor
only, which passes it on once as SIGTERM (a second Ctrl-C, a second SIGTERM: the workers hand
back what they hold at once), waits for them all, and exits as a worker does (128 + signal).

The broker URL reaches the workers in ``CORRAL_BROKER``, not on their command line (where
``ps`` would show its password). The pool's id and pid do reach it there: a worker registers
its pool's id, and stops when its pool dies (:mod:`corral.fleet._orphan`), so that a pool
killed with SIGKILL leaves no orphans. Seams: ``spawn`` (how a worker process is started),
``clock``, ``log`` and ``observer`` (the metrics), so a test can drive :meth:`Pool.step` with
stand-in processes; the integration test runs the real thing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from corral._errors import BrokenBroker
from corral.fleet._autoscale import Decision, Direction, Load, ScalingPolicy, decide
from corral.fleet._broker import Broker, WorkerInfo
from corral.fleet._health import TAKING_WORK, Health, HealthThresholds, WorkerHealth, assess
from corral.fleet._orphan import spawned_safely
from corral.fleet._share import pool_share

__all__ = ["Pool", "PoolOptions"]

# Variables that make ``corral worker`` a pool: a worker the pool starts must not see them.
POOL_VARIABLES = ("CORRAL_MIN_WORKERS", "CORRAL_MAX_WORKERS", "CORRAL_POOL_METRICS_PORT")


@dataclass(frozen=True, kw_only=True)
class PoolOptions:
    """A pool's shape. ``worker_args``: the ``corral worker`` options each process gets
    (queues, concurrency...), ``worker_env`` the variables (``CORRAL_BROKER``);
    ``concurrency`` and ``queues`` are the same, known here to measure the load."""

    worker_args: tuple[str, ...]
    worker_env: Mapping[str, str] = field(default_factory=dict)
    queues: tuple[str, ...]
    concurrency: int
    policy: ScalingPolicy = field(default_factory=ScalingPolicy)
    interval_s: float = 5.0  # between measurements: a few beats of the workers (2.5 s)
    grace_s: float = 10.0  # the workers' --grace
    kill_after_s: float = 15.0  # past its grace, a stopping worker is killed
    max_restarts: int = 5  # workers that died unasked within ``restart_window_s``: give up
    restart_window_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"interval_s must be > 0, not {self.interval_s}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {self.concurrency}")


class PoolObserver(Protocol):
    """What the pool reports each step to (its metrics: :mod:`corral.fleet._pool_metrics`)."""

    def observe(self, load: Load, decision: Decision, health: Iterable[Health]) -> None: ...

    def restarted(self) -> None: ...


class WorkerProcess(Protocol):
    """What the pool needs of a started worker (a :class:`subprocess.Popen`)."""

    pid: int

    def poll(self) -> int | None: ...


def spawn_worker(args: Sequence[str], extra: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """A real ``corral worker`` with ``args`` and our environment with ``extra``, in a session
    of its own, sharing our stderr."""
    env = {k: v for k, v in os.environ.items() if k not in POOL_VARIABLES} | dict(extra)
    return subprocess.Popen([sys.executable, "-m", "corral", "worker", *args], env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Pool:
    """One host's pool of worker processes. :meth:`run` until :meth:`stop`; or, in tests,
    :meth:`step` by hand."""

    def __init__(self, broker: Broker, options: PoolOptions, *,
                 spawn: Callable[[Sequence[str], Mapping[str, str]],
                                 WorkerProcess] = spawn_worker,
                 clock: Callable[[], float] = time.monotonic,
                 log: Callable[[str], None] = _log,
                 observer: PoolObserver | None = None) -> None:
        self.broker = broker
        self.options = options
        self._spawn = spawn
        self._clock = clock
        self._log = log
        self._observer = observer
        self._thresholds = HealthThresholds(heartbeat_timeout=broker.heartbeat_timeout)
        self.host = socket.gethostname()
        self.id = f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:4]}"  # its workers' ``pool``
        self.live: dict[int, WorkerProcess] = {}  # pid -> process: the pool's workers
        self._spawned_at: dict[int, float] = {}  # pid -> epoch seconds it was started
        self.stopping: dict[int, tuple[WorkerProcess, float]] = {}  # pid -> (process, kill at)
        self.last_change: float | None = None
        self._deaths: list[float] = []
        self._stop = threading.Event()
        self._signals = 0
        self._signal = 0

    # ------------------------------------------------------------------ life
    def run(self) -> int:
        """Supervise until stopped; returns the signal that stopped it (0: none). Raises
        :class:`~corral.errors.BrokenExecutor` when workers keep dying."""
        p = self.options.policy
        self._log(f"corral pool: {p.min_workers}..{p.max_workers} workers of concurrency "
                  f"{self.options.concurrency} on {', '.join(self.options.queues)}; target "
                  f"utilisation {p.target:g}, cooldown {p.cooldown_s:g}s")
        try:
            self._start(p.min_workers)
            while not self._stop.is_set():
                self.step()
                self._stop.wait(self.options.interval_s)
        finally:
            self._wind_down()
        return self._signal

    def stop(self, sig: int = 0) -> None:
        """Stop the pool: its workers stop gracefully. Called again (a second Ctrl-C), they
        hand back what they hold at once. Safe from a signal handler."""
        self._signals += 1
        self._signal = self._signal or sig
        self._stop.set()
        if self._signals > 1:
            for proc in [*self.live.values(), *(p for p, _ in self.stopping.values())]:
                _signal(proc, signal.SIGTERM)

    def step(self) -> Decision:
        """One round: reap, measure, decide, act. Returns the decision (HOLD included)."""
        self._reap()
        everyone = self._registry()
        rows = self._registered(everyone)
        wall = time.time()  # the workers' beats are epoch seconds of this host's clock
        health = {w.pid: assess(w, wall, self._thresholds) for w in rows}
        self._kill_silent(health)
        live = [w for w in everyone if assess(w, wall, self._thresholds).state in TAKING_WORK]
        load = self._measure([w for w in rows if health[w.pid].state is not Health.UNHEALTHY],
                             live)
        now = self._clock()
        decision = decide(self.options.policy, load, now, self.last_change)
        if self._observer is not None:
            self._observer.observe(load, decision, [h.state for h in health.values()])
        if decision.direction is not Direction.HOLD:
            self.last_change = now
            self._log(f"corral pool: {decision.direction.value} {decision.current} -> "
                      f"{decision.workers} workers: {decision.reason}")
            if decision.direction is Direction.UP:
                self._start(decision.change)
            else:
                self._retire(-decision.change, rows)
        return decision

    # ------------------------------------------------------------------ the workers
    def _start(self, n: int) -> None:
        # Its workers know the pool (its id in their rows: its share of the queues) and end
        # with it (corral.fleet._orphan): their parent's pid, and the death signal when we
        # start them from the main thread.
        args = (*self.options.worker_args, "--pool-id", self.id, "--pool-pid", str(os.getpid()),
                *(("--pool-death-signal",) if spawned_safely() else ()))
        for _ in range(n):
            spawned_at = time.time()
            proc = self._spawn(args, self.options.worker_env)
            self.live[proc.pid] = proc
            self._spawned_at[proc.pid] = spawned_at

    def _reap(self) -> None:
        now = self._clock()
        for pid, proc in list(self.live.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.live[pid]
            self._spawned_at.pop(pid, None)
            self._deaths = [t for t in self._deaths if now - t < self.options.restart_window_s]
            self._deaths.append(now)
            if len(self._deaths) > self.options.max_restarts:
                from corral._errors import BrokenExecutor

                raise BrokenExecutor(
                    f"{len(self._deaths)} pool workers died within "
                    f"{self.options.restart_window_s:g}s (the last, pid {pid}, with exit code "
                    f"{code}): see their messages above")
            self._log(f"corral pool: worker pid {pid} exited unasked (exit code {code}); "
                      "starting another")
            if self._observer is not None:
                self._observer.restarted()
            self._start(1)
        for pid, (proc, kill_at) in list(self.stopping.items()):
            if proc.poll() is not None:
                del self.stopping[pid]
            elif now >= kill_at:
                self._log(f"corral pool: worker pid {pid} did not stop; killing it")
                _signal(proc, signal.SIGKILL)
                self.stopping[pid] = (proc, now + self.options.kill_after_s)

    def _kill_silent(self, health: dict[int, WorkerHealth]) -> None:
        """SIGKILL live workers silent past the heartbeat timeout (frozen: their attempts are
        reclaimed by others already); the next step reaps and replaces them."""
        for pid, h in health.items():
            if h.state is Health.UNHEALTHY and pid in self.live:
                self._log(f"corral pool: worker pid {pid} is unhealthy ({h.reason}); killing "
                          "it")
                _signal(self.live[pid], signal.SIGKILL)

    def _retire(self, n: int, rows: list[WorkerInfo]) -> None:
        """SIGTERM the ``n`` idlest workers (the newest among equals: least warmed up)."""
        running = {w.pid: w.running for w in rows}
        victims = sorted(self.live, key=lambda pid: (running.get(pid, 0), -pid))[:n]
        kill_at = self._clock() + self.options.grace_s + self.options.kill_after_s
        for pid in victims:
            proc = self.live.pop(pid)
            self._spawned_at.pop(pid, None)
            _signal(proc, signal.SIGTERM)
            self.stopping[pid] = (proc, kill_at)

    def _registry(self) -> list[WorkerInfo]:
        """Every worker's row (none when the registry cannot be read: said once a step)."""
        try:
            return self.broker.workers()
        except BrokenBroker as exc:
            self._log(f"corral pool: cannot read the workers' registry: {exc}")
            return []

    def _registered(self, rows: list[WorkerInfo]) -> list[WorkerInfo]:
        """The rows of this pool's live workers (gone ones too: they are unhealthy)."""
        # A row of an earlier process with a reused pid (gone ones are listed for an hour)
        # started before ours did: not ours.
        return [w for w in rows if w.host == self.host and w.pid in self.live
                and w.started_at >= self._spawned_at.get(w.pid, 0.0) - 1.0]

    def _measure(self, rows: list[WorkerInfo], live: list[WorkerInfo]) -> Load:
        """The pool's load: what its workers (``rows``) run, and its share of its queues'
        depth beside the fleet's other ``live`` workers (corral.fleet._share)."""
        running = sum(w.running for w in rows)
        depths: dict[str, int] = {}
        try:
            depths = {q: self.broker.queue_depth([q]) for q in self.options.queues}
        except BrokenBroker as exc:
            self._log(f"corral pool: cannot read the queues' depth: {exc}")
        waiting = pool_share(depths, {w.id for w in rows}, live, self.options.concurrency)
        return Load(len(self.live), self.options.concurrency, running, waiting,
                    queued=sum(depths.values()))

    def _wind_down(self) -> None:
        """SIGTERM every worker once and wait for all (killing those past their time)."""
        for pid, proc in list(self.live.items()):
            _signal(proc, signal.SIGTERM)
            self.stopping[pid] = (proc, self._clock() + self.options.grace_s
                                  + self.options.kill_after_s)
        self.live.clear()
        while self.stopping:
            self._reap()
            if self.stopping:
                time.sleep(0.1)


def _signal(proc: WorkerProcess, sig: int) -> None:
    """SIGTERM the worker (it stops gracefully); SIGKILL its whole session (its process
    executor's children with it; commands are in groups of their own, which it kills when
    it stops them)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if sig == signal.SIGKILL:
            try:
                os.killpg(proc.pid, sig)
                return
            except ProcessLookupError:  # not a session of its own (a test's stand-in)
                pass
        os.kill(proc.pid, sig)
