"""What travels between a run's coordinator and the workers: attempt and event messages.

An :class:`AttemptMessage` goes to a queue (one per ``queue:`` name); the worker that takes it
reports back on the run's *reply* stream with :class:`Event`\\ s::

    coordinator ──AttemptMessage──> queue "default" ──> worker
        ^                                                 │
        └── reply stream <── START, OUTPUT, BEAT ... END ─┘

The attempt's body (function, arguments, environment) and an END's value travel pickled with
cloudpickle: a function defined in a module is pickled by reference and imported by the
worker (``call:`` tasks), a closure or ``__main__`` function by value. Everything else is
plain text in the message's fields, so a broker's entries can be listed without unpickling
anything (``corral dlq``).
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cloudpickle

from corral._errors import BrokenExecutor, CorralError
from corral.executors._base import ERROR, RemoteTraceback

__all__ = [
    "BEAT",
    "DEFAULT_MAX_VALUE_BYTES",
    "DEFAULT_QUEUE",
    "END",
    "OUTPUT",
    "START",
    "AttemptBody",
    "AttemptMessage",
    "BodyWriter",
    "Event",
    "ValueTooLarge",
    "dump_outcome",
    "load_outcome",
]

DEFAULT_QUEUE = "default"
# What a value (or an error) may weigh on its way back, pickled: a broker holds messages in
# memory, and a value this large belongs in a file or object store, passed by name.
DEFAULT_MAX_VALUE_BYTES = 16 * 1024 * 1024

START, OUTPUT, BEAT, END = "s", "o", "b", "e"  # Event.kind
FUNCTIONS_KEPT = 1024  # unpickled functions a worker keeps (a few per pipeline, usually)


class ValueTooLarge(CorralError, ValueError):
    """The task's value is too large to send back from the worker."""


@dataclass(frozen=True, slots=True)
class AttemptBody:
    """What a worker needs to run an attempt (pickled): the action and its resolved
    arguments, as the local executor ``executor`` takes them (a command line for ``shell``)."""

    fn: Any
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    env: Mapping[str, str] | None
    cwd: str | None
    heartbeat: float | None  # the task has one: the worker reports its beats
    log_path: str | None  # where the coordinator writes the log (None: it keeps none)


@dataclass(frozen=True, slots=True)
class AttemptMessage:
    """One attempt, as queued. ``id`` is unique to the attempt (the coordinator's session,
    the task's index, the attempt number): a worker does not start one already finished, and
    the coordinator ignores anything said of an attempt it no longer waits for."""

    id: str
    run_id: str
    task_id: str
    queue: str
    executor: str  # the local executor the worker runs it with (thread, async, shell, ...)
    reply: str  # the stream its events go to
    body: bytes  # a pickled AttemptBody
    resources: Mapping[str, float] | None = None
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES

    def fields(self) -> dict[str, str | bytes]:
        """The message as a broker entry's fields."""
        out: dict[str, str | bytes] = {
            "id": self.id, "run": self.run_id, "task": self.task_id, "queue": self.queue,
            "executor": self.executor, "reply": self.reply, "body": self.body,
            "max_value": str(self.max_value_bytes),
        }
        if self.resources:
            out["resources"] = ",".join(f"{k}={v:g}" for k, v in self.resources.items())
        return out

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes]) -> AttemptMessage:
        def text(key: bytes) -> str:
            return fields[key].decode()

        resources = None
        raw = fields.get(b"resources")
        if raw:
            resources = {k: float(v) for k, _, v in
                         (pair.partition("=") for pair in raw.decode().split(","))}
        return cls(id=text(b"id"), run_id=text(b"run"), task_id=text(b"task"),
                   queue=text(b"queue"), executor=text(b"executor"), reply=text(b"reply"),
                   body=fields[b"body"], resources=resources,
                   max_value_bytes=int(fields.get(b"max_value", b"0")) or
                   DEFAULT_MAX_VALUE_BYTES)

    def load_body(self, functions: dict[bytes, Any] | None = None) -> AttemptBody:
        """Unpickle the body: imports the task's module (raises what importing raises).
        ``functions`` caches unpickled functions by their pickle (a worker's, for the life
        of the process: many attempts share a few functions)."""
        fields = pickle.loads(self.body)
        if not (isinstance(fields, tuple) and len(fields) == 7
                and isinstance(fields[0], bytes)):
            raise TypeError(f"attempt {self.id}: the message's body is not an attempt")
        pickled_fn = fields[0]
        fn = None if functions is None else functions.get(pickled_fn)
        if fn is None:
            fn = cloudpickle.loads(pickled_fn)
            if functions is not None:
                if len(functions) >= FUNCTIONS_KEPT:  # closures differ by their values
                    functions.clear()
                functions[pickled_fn] = fn
        return AttemptBody(fn, *fields[1:])


class BodyWriter:
    """Pickles attempt bodies for :class:`AttemptMessage`: each function once (by reference
    for a module's function, by value for ``__main__``'s, a closure or a lambda), the rest
    with the standard pickler (cloudpickle when that cannot)."""

    def __init__(self) -> None:
        self._functions: dict[int, tuple[Any, bytes]] = {}  # id -> (fn kept alive, pickle)

    def dump(self, body: AttemptBody) -> bytes:
        fn = body.fn
        known = self._functions.get(id(fn))
        if known is None or known[0] is not fn:
            known = (fn, cloudpickle.dumps(fn))
            self._functions[id(fn)] = known
        fields = (known[1], body.args, body.kwargs, body.env, body.cwd, body.heartbeat,
                  body.log_path)
        try:
            return pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # a lambda or closure among the arguments
            data: bytes = cloudpickle.dumps(fields)
            return data


@dataclass(frozen=True, slots=True)
class Event:
    """What a worker says of an attempt on the run's reply stream. ``data``: an OUTPUT's
    text, an END's pickled outcome (:func:`dump_outcome`), else empty. ``at``: on a START
    and an END, when the attempt started on the worker (epoch seconds, the worker's clock;
    an END carries it because a START sent in the same batch is left out), else None."""

    kind: str
    attempt: str
    worker: str
    data: bytes = b""
    at: float | None = None

    def header(self) -> str:
        """Kind, start time, attempt and worker in one space-separated field: the coordinator
        reads thousands of events a second, and a field costs as much to read as its text."""
        at = "" if self.at is None else repr(self.at)
        return f"{self.kind} {at} {self.attempt} {self.worker}"

    def fields(self) -> dict[str, str | bytes]:
        """The event as a broker entry's fields: its header, and its data if any."""
        if self.data:
            return {"h": self.header(), "d": self.data}
        return {"h": self.header()}

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes]) -> Event:
        return cls.from_header(fields[b"h"], fields.get(b"d", b""))

    @classmethod
    def from_header(cls, header: bytes, data: bytes = b"") -> Event:
        """The event of a :meth:`header` and its data."""
        kind, at, attempt, worker = header.decode().split(" ", 3)  # the worker: the rest
        return cls(kind, attempt, worker, data, float(at) if at else None)


def dump_outcome(status: int, payload: Any, *, limit: int) -> bytes:
    """An attempt's outcome, pickled for its END event. An error travels with its traceback
    as text; an error that cannot be pickled travels as a ``BrokenExecutor`` that names it;
    a value over ``limit`` bytes fails the attempt with :class:`ValueTooLarge`."""
    if status == ERROR and isinstance(payload, BaseException):
        text = "".join(traceback.format_exception(payload))
        try:
            data: bytes = cloudpickle.dumps((status, payload, text))
        except Exception as exc:
            stand_in = BrokenExecutor(f"{type(payload).__name__}: {payload} (the error could "
                                      f"not be sent back: {type(exc).__name__}: {exc})")
            data = cloudpickle.dumps((status, stand_in, text))
        return data
    try:
        try:  # the standard pickler first: several times faster on plain values
            data = pickle.dumps((status, payload, None), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # a lambda, a closure, a class defined in __main__...
            data = cloudpickle.dumps((status, payload, None))
    except Exception as exc:
        error = TypeError(f"the task's value could not be pickled to send it back: "
                          f"{type(exc).__name__}: {exc}")
        return dump_outcome(ERROR, error, limit=limit)
    if len(data) > limit:
        return dump_outcome(ERROR, ValueTooLarge(
            f"the task's value is {len(data):,} bytes pickled, over the fleet's limit of "
            f"{limit:,} bytes (corral worker --max-value-size): write it to a file or an "
            "object store and return its name"), limit=limit)
    return data


def load_outcome(data: bytes) -> tuple[int, Any]:
    """The (status, payload) of an END event; an error gets the worker's traceback as its
    ``__cause__``. A payload that cannot be unpickled here fails the attempt, saying why."""
    try:
        status, payload, text = cloudpickle.loads(data)
    except Exception as exc:
        error = TypeError(f"the outcome sent back by the worker could not be unpickled: "
                          f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return ERROR, error
    if text and isinstance(payload, BaseException):
        payload.__cause__ = RemoteTraceback(text)
    return int(status), payload
