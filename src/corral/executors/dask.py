"""Dask executor: attempts run on a Dask cluster, one ``client.submit`` each.

corral's scheduler still decides what runs and when (order, retries, timeouts, resources
against the run's capacity); Dask only runs the attempts it is handed, on its workers::

    run loop ──submit(work)──> client.submit(run_attempt, ...) ──> scheduler ──> worker
       ^                                                                          │
       ├── sink(OK / ERROR / SKIP) <── await future <─────── result or exception ─┤
       └── started(work), beat, log <── events on the run's topic <── START, OUTPUT, BEAT

Where the cluster comes from: ``DaskExecutor(address)`` connects to a running scheduler;
without an address, a :class:`distributed.LocalCluster` of single-threaded worker processes is
started for the run and closed after it. The client is asynchronous, on the run's own loop;
a local cluster's scheduler runs on a thread of its own.

- **Capacity.** ``slots`` is the cluster's worker threads when the run starts, so corral admits
  no more than Dask can run at once. Attempts may still wait in Dask (a worker still busy with
  an attempt corral gave up on, workers gone): ``reports_start`` — the worker side
  (:mod:`._dask_worker`) sends a START event when an attempt really starts, and its timeout and
  heartbeat count from then.
- **Values.** Functions and arguments travel with cloudpickle (closures, lambdas, ``__main__``
  functions); a function defined in a module is imported by the worker, which must be able to.
  Upstream values go through corral's process: each is fetched when its task ends, and sent
  with every attempt that takes it.
- **Resources.** On a cluster given by address, a task's ``resources`` are Dask worker
  resources: only a worker that offers them runs it. An attempt that no worker of the cluster
  could ever run fails at once (not left waiting). A local cluster runs on this machine, whose
  capacity the run already accounts for: there they are not passed on.
- **Failures.** A task's exception keeps its type, with the worker's traceback as
  ``__cause__``. A worker that dies while it runs an attempt (the scheduler's ``remove-worker``
  event, or Dask starting the attempt again elsewhere, or ``KilledWorker``) fails that attempt
  with :class:`WorkerCrashed`, and the task's retries decide what follows.
- **Stopping.** Dask cannot interrupt a running task. A cancelled or timed-out attempt is
  cancelled in Dask; on a local cluster of its own the executor also kills the worker process
  that runs it (the cluster's nanny starts a fresh one), as the process executor does. On a
  cluster given by address the attempt runs on to its end, its result ignored, and holds its
  worker thread until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import uuid
from collections.abc import Mapping
from typing import IO, Any, Self

import cloudpickle

from corral._errors import BrokenExecutor, WorkerCrashed
from corral.executors._base import (
    ERROR,
    OK,
    SKIP,
    Executor,
    ExecutorSettings,
    RemoteTraceback,
    Work,
)
from corral.executors._dask_worker import (
    BEAT,
    OUTPUT,
    START,
    TRACEBACK_ATTR,
    Skipped,
    run_attempt,
)

__all__ = ["DaskExecutor", "wrong_versions"]

CLUSTER_TOPIC = "all"  # where the scheduler tells of workers and clients coming and going

INSTALL_HINT = "the dask executor needs the dask extra: pip install 'corral[dask]'"


class _Attempt:
    """What the executor keeps of one attempt it submitted, until it ends or is dropped."""

    __slots__ = ("future", "key", "log", "pid", "watcher", "work", "worker")

    def __init__(self, work: Work, key: str, future: Any) -> None:
        self.work = work
        self.key = key
        self.future = future
        self.watcher: asyncio.Task[None] | None = None
        self.worker: str | None = None  # the worker's address, once started
        self.pid: int | None = None  # its process id there
        self.log: IO[str] | None = None  # the attempt's log file, opened on its first output


class DaskExecutor(Executor):
    """Runs callables on a Dask cluster: the scheduler at ``address``, or (None) a local
    cluster of ``n_workers`` single-threaded worker processes started for the run (default:
    one per CPU). ``connect_timeout`` (seconds) defaults to Dask's own
    (``distributed.comm.timeouts.connect``)."""

    name = "dask"
    reports_start = True

    def __init__(self, address: str | None = None, *, n_workers: int | None = None,
                 connect_timeout: float | None = None) -> None:
        super().__init__()
        if address is not None and not address.strip():
            raise ValueError("the Dask scheduler address is empty")
        if n_workers is not None:
            if address is not None:
                raise ValueError("n_workers is for a local cluster: a cluster given by "
                                 "address has the workers it has")
            if n_workers < 1:
                raise ValueError(f"n_workers must be >= 1, not {n_workers}")
        self.address = address
        self.n_workers = n_workers
        self.connect_timeout = connect_timeout
        self._client: Any = None
        self._cluster: Any = None  # a LocalCluster of our own, closed at shutdown
        self._slots: int | None = None
        self._topic = ""  # the run's events: the client's id
        self._token = ""  # in every attempt's key: this run's, unique on a shared cluster
        self._attempts: dict[str, _Attempt] = {}
        self._dropped: set[str] = set()  # attempts given up on whose start we may yet hear of
        self._pids: set[int] = set()  # worker processes of our own cluster that ran attempts
        self._offers: dict[str, Mapping[str, float]] = {}  # worker -> its resources
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def for_run(cls, settings: ExecutorSettings) -> Self:
        # One worker process per CPU, as the process executor has, but no more than the run
        # runs at once: more would only sit idle.
        return cls(n_workers=min(settings.concurrency, os.cpu_count() or 1))

    @property
    def slots(self) -> int | None:
        return self._slots

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` of the run (None outside one)."""
        return self._client

    # ------------------------------------------------------------------ start / shutdown
    async def start(self, sink: Any) -> None:
        await super().start(sink)
        self._loop = asyncio.get_running_loop()
        try:
            import distributed
        except ImportError as exc:
            raise BrokenExecutor(INSTALL_HINT) from exc
        address = self.address
        if address is None:
            n = self.n_workers or os.cpu_count() or 1
            try:
                self._cluster = await asyncio.to_thread(_local_cluster, n)
            except Exception as exc:
                raise BrokenExecutor(f"could not start a local Dask cluster of {n} worker "
                                     f"processes: {type(exc).__name__}: {exc}") from exc
            address = self._cluster.scheduler_address
        timeout = {} if self.connect_timeout is None else {"timeout": self.connect_timeout}
        try:
            # Made, then awaited: one that fails to connect is closed here, not left for its
            # finalizer to complain about.
            self._client = distributed.Client(  # type: ignore[no-untyped-call]
                address, asynchronous=True, set_as_default=False, **timeout)
            await self._client
            info = await self._client.scheduler.identity()
        except Exception as exc:
            await self._close()
            raise BrokenExecutor(f"cannot connect to the Dask scheduler at {address}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        if self._cluster is None:
            await self._check_workers(address)
        self._token = uuid.uuid4().hex[:8]
        # The client's own topic: the scheduler forgets its events once the client has gone.
        self._topic = self._client.id
        self._client.subscribe_topic(self._topic, self._on_event)
        # The scheduler's news of the cluster, for workers that leave it: a few small events
        # (workers and clients coming and going, gathers), read once per run.
        self._client.subscribe_topic(CLUSTER_TOPIC, self._on_cluster_event)
        workers = info.get("workers", {})
        self._offers = {addr: w.get("resources") or {} for addr, w in workers.items()}
        # Read once: a cluster that grows later is not used wider. No worker yet (a cluster
        # that scales up on demand): no limit, attempts wait in Dask, their timers unarmed.
        self._slots = int(info.get("total_threads") or 0) or None

    async def _check_workers(self, address: str) -> None:
        """A cluster given by address must run the same corral on its workers: they run
        :func:`run_attempt` and what the tasks import from corral."""
        from corral import __version__

        try:
            versions = await self._client.get_versions(packages=["corral"])
        except Exception:  # an old or restricted scheduler: the attempts will tell
            return
        wrong = wrong_versions(versions, __version__)
        if wrong:
            shown = ", ".join(f"{addr} ({v or 'not installed'})"
                              for addr, v in sorted(wrong.items())[:5])
            await self._close()
            raise BrokenExecutor(
                f"the Dask workers at {address} need corral {__version__}, as here: "
                f"{shown}{' and more' if len(wrong) > 5 else ''}")

    async def shutdown(self) -> None:
        for attempt in list(self._attempts.values()):
            self._drop(attempt, kill=False)  # closing the cluster stops ours; not another's
        await self._close()

    async def _close(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if client is not None:
            # Unsubscribe first: the scheduler would tell a closed client of its own removal.
            for topic in (self._topic, CLUSTER_TOPIC):
                if topic:
                    with contextlib.suppress(Exception):
                        client.unsubscribe_topic(topic)
            with contextlib.suppress(Exception):
                await client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(cluster.close)
        self._topic = ""
        self._dropped.clear()
        self._pids.clear()

    def kill_all_now(self) -> None:
        """SIGKILL the worker processes of our own cluster (the second Ctrl-C)."""
        cluster = self._cluster
        if cluster is None:
            return
        pids = set(self._pids)
        for nanny in list(getattr(cluster, "workers", {}).values()):
            with contextlib.suppress(Exception):
                if nanny.pid:
                    pids.add(nanny.pid)
        for pid in pids:
            _kill(pid)

    # ------------------------------------------------------------------ submit / cancel
    def submit(self, work: Work) -> None:
        client = self._client
        if client is None:
            raise BrokenExecutor("the dask executor was not started")
        try:
            payload = cloudpickle.dumps((work.fn, work.args, dict(work.kwargs)))
        except Exception as exc:
            error = TypeError(f"task {work.task_id!r} could not be pickled for Dask: {exc}")
            error.__cause__ = exc
            self.sink(work, ERROR, error)
            return
        resources = None
        if self._cluster is None and work.resources:
            resources = {k: v for k, v in work.resources.items() if v} or None
            if resources and self._offers and not _fits(resources, self._offers):
                assert self._loop is not None
                self._loop.create_task(self._submit_when_fits(work, payload, resources))
                return
        self._submit(work, payload, resources)

    def _submit(self, work: Work, payload: bytes, resources: dict[str, float] | None) -> None:
        key = f"{work.task_id}-{self._token}-{work.attempt}"
        heartbeat = work.heartbeat if work.beat is not None else None
        future = self._client.submit(run_attempt, payload, self._topic, key,
                                     work.log_path is not None, heartbeat,
                                     key=key, pure=False, resources=resources)
        attempt = _Attempt(work, key, future)
        self._attempts[key] = attempt
        work.handle = attempt
        assert self._loop is not None
        attempt.watcher = self._loop.create_task(self._watch(attempt))

    async def _submit_when_fits(self, work: Work, payload: bytes,
                                resources: dict[str, float]) -> None:
        """No worker known to offer ``resources``: ask the scheduler again (workers may have
        joined since), then submit, or fail the attempt if none could ever run it."""
        try:
            info = await self._client.scheduler.identity()
            workers = info.get("workers", {})
            self._offers = {addr: w.get("resources") or {} for addr, w in workers.items()}
        except Exception:  # the scheduler went away: submitting will say so
            pass
        if work.handle is not None or self._client is None:
            return  # cancelled meanwhile, or the run is over
        if not self._offers or _fits(resources, self._offers):
            self._submit(work, payload, resources)
            return
        offered = "; ".join(f"{addr}: {dict(r) or 'none'}"
                            for addr, r in sorted(self._offers.items())[:5])
        self.sink(work, ERROR, BrokenExecutor(
            f"no worker of the Dask cluster at {self.address} offers the resources task "
            f"{work.task_id!r} asks for ({resources}); its workers offer {offered}. Start "
            "workers with them (dask worker ... --resources \"NAME=AMOUNT\")"))

    def cancel(self, work: Work) -> None:
        attempt = work.handle
        if isinstance(attempt, _Attempt) and self._attempts.get(attempt.key) is attempt:
            self._drop(attempt, kill=True)
        else:
            work.handle = _CANCELLED  # waiting for _submit_when_fits: it will not submit

    def _drop(self, attempt: _Attempt, *, kill: bool) -> None:
        """Forget ``attempt``: cancel it in Dask and, on a cluster of our own, kill the worker
        process running it (``kill``). Nothing it reports later reaches the sink."""
        self._attempts.pop(attempt.key, None)
        self._dropped.add(attempt.key)
        attempt.work.handle = None
        if attempt.log is not None:
            attempt.log.close()
            attempt.log = None
        if attempt.watcher is not None:
            attempt.watcher.cancel()
        if self._client is not None:
            with contextlib.suppress(Exception):
                cancelling = self._client.cancel([attempt.future])
                if asyncio.iscoroutine(cancelling) and self._loop is not None:
                    self._loop.create_task(_quietly(cancelling))
        if kill and self._cluster is not None and attempt.pid is not None:
            # Its single thread runs this attempt: the nanny replaces the process.
            _kill(attempt.pid)

    # ------------------------------------------------------------------ outcomes
    async def _watch(self, attempt: _Attempt) -> None:
        future = attempt.future
        try:
            value = await future
        except BaseException as exc:
            if self._attempts.get(attempt.key) is not attempt:
                return  # dropped meanwhile (or being shut down): its fate is decided
            status = future.status
            if status == "error":
                self._end(attempt, ERROR, self._task_error(attempt, exc))
            elif status == "cancelled":
                self._end(attempt, ERROR, BrokenExecutor(
                    f"Dask cancelled task {attempt.work.task_id!r} (attempt "
                    f"{attempt.work.attempt}): {exc}"))
            elif isinstance(exc, asyncio.CancelledError):
                raise
            else:  # it ran, but its value could not come back (e.g. unpickling failed here)
                error = TypeError(f"the result of task {attempt.work.task_id!r} could not be "
                                  f"fetched from Dask: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                self._end(attempt, ERROR, error)
            return
        if self._attempts.get(attempt.key) is attempt:
            if isinstance(value, Skipped):
                self._end(attempt, SKIP, None)
            else:
                self._end(attempt, OK, value)

    def _task_error(self, attempt: _Attempt, exc: BaseException) -> BaseException:
        from distributed import KilledWorker

        if isinstance(exc, KilledWorker):
            error = WorkerCrashed(f"the Dask workers running task {attempt.work.task_id!r} "
                                  f"died: {exc}")
            error.__cause__ = exc
            return error
        text = getattr(exc, TRACEBACK_ATTR, None)
        if isinstance(text, str):
            with contextlib.suppress(AttributeError):
                delattr(exc, TRACEBACK_ATTR)
            exc.__cause__ = RemoteTraceback(text)
        return exc

    def _end(self, attempt: _Attempt, status: int, payload: Any) -> None:
        self._attempts.pop(attempt.key, None)
        work = attempt.work
        work.handle = None
        if attempt.log is not None:
            attempt.log.close()
            attempt.log = None
        with contextlib.suppress(Exception):
            attempt.future.release()  # the cluster may forget its value now
        self.sink(work, status, payload)

    def _crashed(self, attempt: _Attempt, worker: str | None, why: str) -> None:
        self._drop(attempt, kill=False)
        self.sink(attempt.work, ERROR, WorkerCrashed(
            f"the Dask worker {worker or 'unknown'} running task {attempt.work.task_id!r} "
            f"(attempt {attempt.work.attempt}) {why}"))

    # ------------------------------------------------------------------ events
    def _on_event(self, event: tuple[float, Any]) -> None:
        """An event on the run's topic, on the run loop: a worker's news of an attempt."""
        message = event[1]
        if not isinstance(message, list | tuple) or len(message) < 2:
            return  # the scheduler's own news of this client (update-graph, cancel)
        kind, key = message[0], message[1]
        attempt = self._attempts.get(key)
        if attempt is None:
            if kind == START and key in self._dropped and self._cluster is not None:
                _kill(message[3])  # Dask ran an attempt we gave up on again: stop it
            return
        work = attempt.work
        if kind == START:
            address, pid = message[2], message[3]
            if attempt.worker is not None:
                # Dask started it again: the worker that ran it is gone.
                self._crashed(attempt, attempt.worker,
                              f"died; Dask started the attempt again on {address}")
                if self._cluster is not None:
                    _kill(pid)
                return
            attempt.worker, attempt.pid = address, pid
            work.worker = address
            if self._cluster is not None:
                self._pids.add(pid)
            self.started(work)
        elif kind == OUTPUT:
            if work.log_path is not None:
                if attempt.log is None:
                    attempt.log = open(work.log_path, "a", encoding="utf-8")  # noqa: SIM115
                attempt.log.write(message[2])
                attempt.log.flush()
            if work.beat is not None:
                work.beat()
        elif kind == BEAT and work.beat is not None:
            work.beat()

    def _on_cluster_event(self, event: tuple[float, Any]) -> None:
        """The scheduler's news of the cluster: a worker that leaves takes the attempts it
        was running with it. Dask would start them again elsewhere (up to its
        ``allowed-failures``); corral fails them instead, and the task's retries decide. An
        attempt Dask had only queued there never started: Dask runs it elsewhere, as it
        should. (The scheduler has an attempt's START before the attempt runs a line of
        its own: see :mod:`._dask_worker`.)"""
        message = event[1]
        if not isinstance(message, dict) or message.get("action") != "remove-worker":
            return
        address = message.get("worker")
        how = "was retired" if message.get("expected") else "died"
        for attempt in [a for a in self._attempts.values() if a.worker == address]:
            self._crashed(attempt, address, how)


_CANCELLED = object()  # work.handle of an attempt cancelled before it was submitted


def wrong_versions(versions: Mapping[str, Any], wanted: str) -> dict[str, str | None]:
    """The workers in ``client.get_versions(packages=["corral"])`` that do not have corral
    ``wanted``, with the version they have (None: not installed)."""
    have = {addr: (info.get("packages") or {}).get("corral")
            for addr, info in (versions.get("workers") or {}).items()}
    return {addr: v for addr, v in have.items() if v != wanted}


def _fits(resources: Mapping[str, float], offers: Mapping[str, Mapping[str, float]]) -> bool:
    """Whether some worker offers every resource in the amounts asked for."""
    return any(all(offer.get(name, 0) >= amount for name, amount in resources.items())
               for offer in offers.values())


def _local_cluster(n_workers: int) -> Any:
    """A LocalCluster for one run: ``n_workers`` processes of one thread each (so that one
    attempt's worker can be killed alone), Dask's own logs only when critical (corral reports
    what happens to the attempts)."""
    from distributed import LocalCluster

    return LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=n_workers, threads_per_worker=1, processes=True,
        # Any free port, on this machine only: the default (8787) may be taken by another
        # cluster, and distributed then leaks a socket as it tries the next one.
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.CRITICAL)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


async def _quietly(awaitable: Any) -> None:
    with contextlib.suppress(Exception):
        await awaitable
