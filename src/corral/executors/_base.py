"""The executor contract: every way of running a task plugs in here.

An executor receives :class:`Work` (one attempt of one task) through :meth:`Executor.submit`
and later reports how it ended by calling the *sink* it was started with::

    run loop ──submit(work)──> executor ──runs it──> sink(work, status, payload)
       ^                                                    │
       └────────────── CompletionQueue (batched) ───────────┘

``status`` is an :class:`Outcome`: ``OK`` (payload: the return value), ``ERROR`` (payload: the
exception), ``SKIP`` or ``CANCELLED`` (payload: ``None``). The sink is thread-safe and cheap:
executors may call it from any thread, and many completions wake the run loop once.

What an executor declares, so that the run loop needs no executor's name (see
:mod:`corral.executors._registry` for how executors are found by name):

- ``runs``: the actions it takes, ``"callables"`` (Python functions) or ``"commands"`` (shell
  command lines); validation refuses a task whose action the executor cannot run.
- ``slots``: how many attempts it runs at once (``None``: as many as the run admits). The
  scheduler admits no more than that, so no attempt waits inside an executor after admission
  and a task's timeout counts from its real start. An executor whose capacity changes while
  a run goes (the fleet, slowed by a saturated broker) calls :meth:`Executor.slots_changed`;
  the run loop reads ``slots`` again and admits by it from then on.
- ``writes_logs``: whether every attempt writes its log file (a command's output, a worker's
  file descriptors); otherwise a log exists only if the attempt printed something.
- ``reports_start``: it calls :meth:`Executor.started` when an attempt really starts (a
  worker took it from a queue, a fresh worker process is up); the attempt's ``timeout`` and
  ``heartbeat`` count from then instead of from admission.

An attempt of a task with a ``heartbeat`` is a :class:`WatchedWork`, whose ``beat`` is the one
optional hook: an executor calls it, from any thread, on every sign of life of the attempt —
output it sees (a shell command's or worker's output, ``print()`` of a thread or async task)
and :func:`corral.heartbeat` calls. For every other attempt ``work.beat`` is ``None`` (a class
default: building such a ``Work`` costs nothing more). An executor that never calls it only
loses output as a sign of life.

Only :meth:`Executor.submit` is abstract. :meth:`Executor.cancel` is best-effort: the run loop
has already decided the attempt's fate (cancelled or timed out) and ignores anything reported
for it later. That is what lets a thread that cannot be killed be abandoned, and a remote
worker that went silent be written off, without special cases in the loop.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import enum
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from corral import _capture, _heartbeat
from corral._errors import Skip

__all__ = [
    "CANCELLED",
    "ERROR",
    "OK",
    "SKIP",
    "STARTED",
    "ActionKind",
    "CompletionQueue",
    "Executor",
    "ExecutorSettings",
    "Outcome",
    "RemoteTraceback",
    "Sink",
    "WatchedWork",
    "Work",
    "call",
]


class Outcome(enum.IntEnum):
    """How an attempt ended, as an executor reports it to the sink."""

    OK = 0  # it returned; the payload is its value
    ERROR = 1  # it raised (or the command failed); the payload is the exception
    SKIP = 2  # it raised corral.Skip
    CANCELLED = 3  # it was cancelled by something other than the run loop


OK = Outcome.OK
ERROR = Outcome.ERROR
SKIP = Outcome.SKIP
CANCELLED = Outcome.CANCELLED

STARTED = 4
"""Not an outcome: what :meth:`Executor.started` reports, for executors with ``reports_start``."""

class RemoteTraceback(Exception):
    """The traceback of an exception raised elsewhere (a worker process, a remote worker), as
    text: executors that run tasks out of this process set it as the ``__cause__`` of the
    task's own exception, so that it shows under that exception's traceback."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


Sink = Callable[["Work", int, Any], None]

ActionKind = Literal["callables", "commands"]
"""What an executor runs: Python callables, or shell command lines."""


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    """What a run tells the executors it makes by name (:meth:`Executor.for_run`).

    ``concurrency`` is the run's; ``env`` the pipeline's environment (added to the inherited
    one for commands).
    """

    concurrency: int
    env: Mapping[str, str] = field(default_factory=dict)


class Work:
    """One attempt of one task, as handed to an executor.

    ``fn`` is the callable to run (for the shell executor, the command string), with ``args``
    and ``kwargs`` already resolved (upstream values substituted). ``index`` and ``attempt``
    identify the attempt to the run loop; executors pass them back untouched. ``resources`` is
    what the task asks for (``None``: nothing); the run has already admitted it against its
    own capacity, and an executor that places attempts on remote workers passes it on.
    ``heartbeat`` and ``beat`` are ``None`` here, and set in a :class:`WatchedWork`.
    ``log_file`` is where the attempt's output goes, as a string (``log_path``: the same as a
    ``Path``, made when asked: the run loop makes one attempt per task and a ``Path`` costs
    more than the rest of the attempt's bookkeeping).
    """

    __slots__ = (
        "args",
        "attempt",
        "cwd",
        "env",
        "fn",
        "handle",
        "index",
        "kwargs",
        "log_file",
        "resources",
        "task_id",
        "timeout",
        "worker",
    )

    def __init__(
        self,
        index: int,
        attempt: int,
        task_id: str,
        fn: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        log_path: str | Path | None = None,
        resources: Mapping[str, float] | None = None,
    ) -> None:
        self.index = index
        self.attempt = attempt
        self.task_id = task_id
        self.fn = fn
        self.args = args
        self.kwargs = kwargs or {}
        self.timeout = timeout
        self.env = env
        self.cwd = cwd
        self.log_file = log_path if log_path is None or type(log_path) is str else str(log_path)
        self.resources = resources
        self.handle: Any = None  # executor-private: whatever it needs to cancel this attempt
        self.worker: str | None = None  # who runs it, if the executor knows (a remote worker)

    @property
    def log_path(self) -> Path | None:
        """:attr:`log_file` as a ``Path`` (``None``: the attempt keeps no log)."""
        return None if self.log_file is None else Path(self.log_file)

    # Class defaults, not slots: an attempt without a heartbeat never sets them.
    heartbeat: float | None = None
    beat: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<Work {self.task_id!r} attempt {self.attempt}>"


class WatchedWork(Work):
    """An attempt of a task with a ``heartbeat`` (seconds): executors call ``beat()``, from
    any thread, on each sign of life of the attempt."""

    __slots__ = ("beat", "heartbeat")

    def __init__(
        self, *args: Any, heartbeat: float, beat: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.heartbeat = heartbeat
        self.beat = beat


class Executor(abc.ABC):
    """Runs attempts and reports their outcomes. For implementers: override :meth:`submit`,
    and :meth:`start`, :meth:`cancel` and :meth:`shutdown` when there is something to do;
    set ``runs`` and ``writes_logs``, and ``slots`` if it runs fewer attempts at once than a
    run may admit. :meth:`for_run` makes one for a run that names it without passing one."""

    name: ClassVar[str] = "executor"
    runs: ClassVar[ActionKind] = "callables"
    writes_logs: ClassVar[bool] = False
    reports_start: ClassVar[bool] = False

    def __init__(self) -> None:
        self._sink: Sink | None = None

    @classmethod
    def for_run(cls, settings: ExecutorSettings) -> Self:
        """The executor a run makes when a task names this one and the run was given none."""
        return cls()

    # Who hears of a change of ``slots`` (watch_slots): a class default, so that a subclass
    # that never calls it costs nothing.
    _slots_watcher: Callable[[Executor], None] | None = None

    @property
    def slots(self) -> int | None:
        """How many attempts it runs at once; ``None``: as many as the run admits. Read after
        :meth:`start`, and again each time it calls :meth:`slots_changed`."""
        return None

    def slots_changed(self) -> None:
        """For implementers whose :attr:`slots` change while a run goes: call it (from any
        thread) after they changed. Not per attempt: when the capacity itself moves."""
        watcher = self._slots_watcher
        if watcher is not None:
            watcher(self)

    def watch_slots(self, watcher: Callable[[Executor], None] | None) -> None:
        """For drivers: ``watcher(executor)`` is called, from any thread, after each change
        of :attr:`slots` (None: no longer)."""
        self._slots_watcher = watcher

    async def start(self, sink: Sink) -> None:
        """Called once by the run loop, on its event loop, before the first submit."""
        self._sink = sink

    @property
    def sink(self) -> Sink:
        if self._sink is None:
            raise RuntimeError(f"{type(self).__name__} was not started")
        return self._sink

    def started(self, work: Work) -> None:
        """For implementers with ``reports_start``: ``work`` really starts now (any thread)."""
        self.sink(work, STARTED, None)

    @abc.abstractmethod
    def submit(self, work: Work) -> None:
        """Start running ``work``; report its outcome to the sink later, from any thread."""

    def cancel(self, work: Work) -> None:  # noqa: B027 - optional hook
        """Best effort: stop ``work`` if it is still running. The outcome is already decided."""

    async def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release workers. Anything still running is stopped; nothing is left behind."""

    def kill_all_now(self) -> None:  # noqa: B027 - optional hook
        """Kill everything this executor started, at once and without waiting: the process is
        about to exit (a second Ctrl-C). Executors that start processes override it."""


def call(work: Work) -> tuple[Outcome, Any]:
    """Run ``work.fn`` in the calling thread with what every in-process executor owes an
    attempt, and classify how it ended: its ``print()`` goes to its log (and is a sign of life),
    :func:`corral.heartbeat` beats for it, ``Skip`` is ``SKIP`` and any other exception the
    task's own ``ERROR``. For executors that run callables on their own threads; hand the
    result to the sink."""
    output = token = beat_token = None
    beat = work.beat
    if work.log_file is not None or beat is not None:
        output = _capture.TaskOutput(work.log_file, beat)
        token = _capture.current.set(output)
        if beat is not None:
            beat_token = _heartbeat.current.set(beat)
    try:
        return OK, work.fn(*work.args, **work.kwargs)
    except Skip:
        return SKIP, None
    except BaseException as exc:  # a task's failure, whatever it is, belongs to the task
        return ERROR, exc
    finally:
        if output is not None:
            if beat_token is not None:
                _heartbeat.current.reset(beat_token)
            _capture.current.reset(token)  # type: ignore[arg-type]
            output.close()


class CompletionQueue:
    """Where executors drop outcomes; the run loop takes them in batches.

    ``put`` may be called from any thread. Only the first outcome after the loop last looked
    schedules ``on_ready`` (once per batch, not per task): with ``call_soon`` from the loop's
    own thread, with ``call_soon_threadsafe`` from any other.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_ready: Callable[[], None]) -> None:
        self._loop = loop
        self._on_ready = on_ready
        self._thread = threading.get_ident()
        self._items: collections.deque[tuple[Work, int, Any]] = collections.deque()
        self._armed = True  # True: the next put schedules on_ready

    def put(self, work: Work, status: int, payload: Any) -> None:
        self._items.append((work, status, payload))
        if self._armed:
            self._armed = False
            if threading.get_ident() == self._thread:
                self._loop.call_soon(self._on_ready)
            else:
                try:
                    self._loop.call_soon_threadsafe(self._on_ready)
                except RuntimeError:  # the loop has closed: the run is over, and an
                    pass  # abandoned attempt reporting late is ignored, as any decided one

    def poke(self) -> None:
        """Schedule ``on_ready`` even with nothing queued (start, cancel)."""
        self._loop.call_soon_threadsafe(self._on_ready)

    def __bool__(self) -> bool:
        return bool(self._items)

    def drain(self) -> list[tuple[Work, int, Any]]:
        """Take every queued outcome. The queue stays disarmed until :meth:`rearm`."""
        self._armed = False
        items = self._items
        out = list(items)
        for _ in range(len(out)):
            items.popleft()
        return out

    def rearm(self) -> bool:
        """Let the next put schedule ``on_ready`` again; True if outcomes are already waiting.

        Arm first, then look: a put racing with us either is seen here or sees the queue armed
        and schedules ``on_ready`` itself, so no outcome is ever left unnoticed.
        """
        self._armed = True
        if self._items:
            self._armed = False
            return True
        return False
