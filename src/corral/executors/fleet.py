"""Fleet executor: attempts go to a broker's queues, and ``corral worker`` processes run them.

corral's scheduler still decides order, admission, retries and timeouts; the executor only
puts each admitted attempt on the queue its task names (``queue:``, default ``default``) and
turns what the workers say back into the run loop's events::

    submit(work) ──AttemptMessage──> FleetSession ──> broker queue ──> corral worker
       sink(OK / ERROR / SKIP) <── END ──┐                                  │
       started(work)           <── START ┼── reply stream <─────────────────┘
       beat, the attempt's log <── OUTPUT, BEAT

A run in fleet mode (``corral run --broker URL``, ``dag.run(broker=URL)``) gives every
executor name its tasks use to a fleet executor of that name: the worker runs the attempt with
its own executor of that name (``thread``, ``async``, ``process``, ``shell``), so a task
behaves on a worker as it does locally. :func:`fleet_executors` makes them, sharing one
:class:`~corral.fleet._coordinator.FleetSession`.

- ``reports_start``: an attempt may wait in its queue for a free worker; its timeout and
  heartbeat count from the worker's START.
- A cancelled or timed-out attempt is cancelled on the fleet: a worker that has not started it
  skips it, one that runs it stops it as its own executor would (a command's process group is
  ended; a thread is abandoned).
- Values and errors travel pickled (cloudpickle); an error keeps its type, with the worker's
  traceback as ``__cause__``.
- Backpressure: while the broker (or the run's store's connection pool) is saturated, the
  session's factor is under 1 and ``slots`` is the run's concurrency (``capacity``) times it:
  the scheduler admits fewer attempts to the fleet until it recovers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import IO, Any, ClassVar

from corral._errors import BrokenExecutor
from corral.executors._base import ERROR, ActionKind, Executor, Work
from corral.fleet._backpressure import admitted
from corral.fleet._coordinator import FleetSession, Receiver
from corral.fleet._protocol import (
    BEAT,
    DEFAULT_MAX_VALUE_BYTES,
    DEFAULT_QUEUE,
    END,
    OUTPUT,
    START,
    AttemptBody,
    AttemptMessage,
    BodyWriter,
    Event,
    load_outcome,
)

__all__ = ["FleetCommandExecutor", "FleetExecutor", "fleet_executors"]


class _Sent:
    """An attempt on the fleet, until it ends or is cancelled."""

    __slots__ = ("log", "started", "work")

    def __init__(self, work: Work) -> None:
        self.work = work
        self.started = False
        self.log: IO[str] | None = None


class FleetExecutor(Executor, Receiver):
    """Sends callables to the fleet, to run there with the worker's executor ``remote``
    (``thread``: the default). ``session`` is the run's connection to the broker, shared by
    its fleet executors; ``queues`` maps task ids to their queue (the others go to
    ``default``). The session is opened at :meth:`start` and closed at :meth:`shutdown`.
    ``capacity``: the most attempts the run may have in flight here (its concurrency), which
    backpressure scales down (None: no backpressure)."""

    name = "fleet"
    reports_start = True
    remote_default: ClassVar[str] = "thread"

    def __init__(self, session: FleetSession, *, remote: str | None = None,
                 queues: Mapping[str, str] | None = None,
                 env: Mapping[str, str] | None = None,
                 max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
                 capacity: int | None = None) -> None:
        super().__init__()
        self.session = session
        self.capacity = capacity
        self._slots: int | None = None
        if capacity is not None:
            session.watch_factor(self._factor_changed)
        self.remote = remote or self.remote_default
        self.queues = dict(queues or {})
        self.env = dict(env or {})  # the pipeline's, under each task's own (for commands)
        self.max_value_bytes = max_value_bytes
        self._sent: dict[str, _Sent] = {}
        self._bodies = BodyWriter()
        self._opened = False

    @property
    def slots(self) -> int | None:
        return self._slots

    def _factor_changed(self) -> None:
        """The session's backpressure factor moved (its sender thread)."""
        assert self.capacity is not None
        factor = self.session.factor
        slots = None if factor >= 1.0 else admitted(self.capacity, factor)
        if slots != self._slots:
            self._slots = slots
            self.slots_changed()

    async def start(self, sink: Any) -> None:
        await super().start(sink)
        import asyncio

        await asyncio.to_thread(self.session.open)
        self._opened = True

    async def shutdown(self) -> None:
        if not self._opened:
            return
        self._opened = False
        for sent in list(self._sent.values()):
            self._close_log(sent)
        self._sent.clear()
        import asyncio

        await asyncio.to_thread(self.session.close)

    def submit(self, work: Work) -> None:
        session = self.session
        attempt = session.attempt_id(work.index, work.attempt)
        body = AttemptBody(
            fn=work.fn, args=work.args, kwargs=dict(work.kwargs),
            env={**self.env, **work.env} if self.env and work.env else self.env or work.env,
            cwd=work.cwd,
            heartbeat=work.heartbeat if work.beat is not None else None,
            log_path=None if work.log_path is None else str(work.log_path))
        try:
            data = self._bodies.dump(body)
        except Exception as exc:
            error = TypeError(f"task {work.task_id!r} could not be pickled for the fleet: {exc}")
            error.__cause__ = exc
            self.sink(work, ERROR, error)
            return
        message = AttemptMessage(
            id=attempt, run_id=session.run_id, task_id=work.task_id,
            queue=self.queues.get(work.task_id, DEFAULT_QUEUE), executor=self.remote,
            reply=session.reply, body=data, resources=work.resources,
            max_value_bytes=self.max_value_bytes)
        sent = _Sent(work)
        self._sent[attempt] = sent
        work.handle = attempt
        session.send(message, self)

    def cancel(self, work: Work) -> None:
        attempt = work.handle
        if isinstance(attempt, str):
            sent = self._sent.pop(attempt, None)
            if sent is not None:
                self._close_log(sent)
            self.session.cancel(attempt)
        work.handle = None

    # ------------------------------------------------------------------ events (reader thread)
    def on_event(self, message: AttemptMessage, event: Event) -> bool:
        sent = self._sent.get(event.attempt)
        if sent is None:
            return event.kind == END
        work = sent.work
        kind = event.kind
        if kind == END:
            self._sent.pop(event.attempt, None)
            if sent.log is None and self.writes_logs and work.log_path is not None:
                with contextlib.suppress(OSError):  # a silent command has an empty log
                    open(work.log_path, "a").close()
            self._close_log(sent)
            status, payload = load_outcome(event.data)
            work.worker = event.worker
            work.handle = None
            if not sent.started:
                self.started(work)
            self.sink(work, status, payload)
            return True
        if kind == START:
            if not sent.started:  # a second START: reclaimed by another worker, timers run on
                sent.started = True
                work.worker = event.worker
                self.started(work)
        elif kind == OUTPUT:
            if work.log_path is not None:
                with contextlib.suppress(OSError, ValueError):  # ValueError: closed, cancelled
                    if sent.log is None:
                        sent.log = open(work.log_path, "a", encoding="utf-8")  # noqa: SIM115
                    sent.log.write(event.data.decode("utf-8", errors="replace"))
                    sent.log.flush()
            if work.beat is not None:
                work.beat()
        elif kind == BEAT and work.beat is not None:
            work.beat()
        return False

    @staticmethod
    def _close_log(sent: _Sent) -> None:
        if sent.log is not None:
            with contextlib.suppress(OSError):
                sent.log.close()
            sent.log = None


class FleetCommandExecutor(FleetExecutor):
    """Sends shell commands to the fleet (the worker runs them with its ``shell``)."""

    runs: ClassVar[ActionKind] = "commands"
    writes_logs = True
    remote_default = "shell"


def fleet_executors(session: FleetSession, names: Iterable[str], *,
                    kinds: Mapping[str, ActionKind],
                    queues: Mapping[str, str] | None = None,
                    env: Mapping[str, str] | None = None,
                    keep: Iterable[str] = ("dask",),
                    capacity: int | None = None) -> dict[str, Executor]:
    """A fleet executor for each executor name in ``names`` (but those in ``keep``, which run
    where they are: a Dask cluster is its own fleet), sharing ``session``; ``kinds`` says what
    each name runs, ``env`` is the pipeline's environment (sent with every attempt),
    ``capacity`` the run's concurrency (what backpressure scales down)."""
    out: dict[str, Executor] = {}
    kept = set(keep)
    for name in sorted(set(names) - kept):
        kind = kinds.get(name)
        if kind is None:
            raise BrokenExecutor(f"executor {name!r} cannot run on the fleet: unknown kind")
        cls = FleetCommandExecutor if kind == "commands" else FleetExecutor
        out[name] = cls(session, remote=name, queues=queues, env=env, capacity=capacity)
    return out
