"""The fleet's messages: what travels, and what a worker sends back when it cannot."""

from __future__ import annotations

import threading

import pytest

from corral._errors import BrokenExecutor
from corral.executors._base import ERROR, OK, RemoteTraceback
from corral.fleet._protocol import (
    END,
    START,
    AttemptMessage,
    Event,
    ValueTooLarge,
    dump_outcome,
    load_outcome,
)


def test_an_attempt_message_round_trips_through_its_fields():
    m = AttemptMessage(id="s:1:2", run_id="r", task_id="t", queue="gpu", executor="shell",
                       reply="r:s", body=b"\x80data", resources={"gpu": 1.0, "cpu": 0.5},
                       max_value_bytes=123)
    fields = {k.encode(): v if isinstance(v, bytes) else v.encode()
              for k, v in m.fields().items()}
    assert AttemptMessage.from_fields(fields) == m


@pytest.mark.parametrize("event", [
    Event(START, "s:1:1", "w", at=1_790_000_000.123456),
    Event(END, "s:1:1", "w", b"\x80outcome", at=0.5),
    Event(END, "s:1:1", "w", b"\x80outcome"),  # an attempt that never started (no import)
])
def test_an_event_round_trips_through_its_fields_with_its_start_time(event):
    fields = {k.encode(): v if isinstance(v, bytes) else v.encode()
              for k, v in event.fields().items()}
    assert Event.from_fields(fields) == event


def test_a_value_comes_back_and_an_error_keeps_its_type_and_the_workers_traceback():
    assert load_outcome(dump_outcome(OK, {"a": [1, 2]}, limit=10_000)) == (OK, {"a": [1, 2]})
    try:
        raise KeyError("boom")
    except KeyError as exc:
        status, error = load_outcome(dump_outcome(ERROR, exc, limit=10_000))
    assert status == ERROR
    assert isinstance(error, KeyError)
    assert isinstance(error.__cause__, RemoteTraceback)
    assert "raise KeyError" in error.__cause__.text


def test_a_value_over_the_limit_fails_naming_the_limit():
    status, error = load_outcome(dump_outcome(OK, "x" * 5000, limit=1000))
    assert status == ERROR
    assert isinstance(error, ValueTooLarge)
    assert "1,000 bytes" in str(error)


def test_what_cannot_be_pickled_fails_saying_so():
    status, error = load_outcome(dump_outcome(OK, threading.Lock(), limit=10_000))
    assert status == ERROR
    assert isinstance(error, TypeError)
    assert "could not be pickled" in str(error)

    class Unpicklable(Exception):
        def __reduce__(self):
            raise TypeError("no")

    status, error = load_outcome(dump_outcome(ERROR, Unpicklable("bad"), limit=10_000))
    assert isinstance(error, BrokenExecutor)
    assert "Unpicklable: bad" in str(error)


def test_an_outcome_that_cannot_be_read_here_fails_the_attempt():
    status, error = load_outcome(b"not a pickle")
    assert status == ERROR
    assert "could not be unpickled" in str(error)


@pytest.mark.parametrize(("text", "amounts"), [
    ("gpu=1", {"gpu": 1.0}), (" gpu=1, mem_gb=2.5 ", {"gpu": 1.0, "mem_gb": 2.5}), ("", {})])
def test_worker_resources_parse(text, amounts):
    from corral.cli._fleet import parse_resources

    assert parse_resources(text) == amounts


@pytest.mark.parametrize("text", ["gpu", "gpu=x", "gpu=-1", "gpu=inf", "9gpu=1", "=1"])
def test_bad_worker_resources_say_why(text):
    from corral.cli._fleet import parse_resources

    with pytest.raises(ValueError, match=text.split("=")[0] or "NAME"):
        parse_resources(text)


def test_a_body_round_trips_each_function_pickled_once_closures_and_lambdas_too():
    from corral.fleet._protocol import AttemptBody, BodyWriter

    writer = BodyWriter()
    factor = 3
    bodies = [AttemptBody(fn=fn, args=(k,), kwargs={"f": (lambda x: x * factor)}, env=None,
                          cwd=None, heartbeat=None, log_path=None)
              for k, fn in enumerate([divmod, divmod, lambda x, f: f(x)])]
    functions: dict[bytes, object] = {}
    loaded = []
    for body in bodies:
        m = AttemptMessage(id="a", run_id="r", task_id="t", queue="q", executor="thread",
                           reply="r", body=writer.dump(body))
        loaded.append(m.load_body(functions))
    assert loaded[0].fn is loaded[1].fn is divmod
    assert len(functions) == 2
    assert loaded[2].fn(2, **loaded[2].kwargs) == 6
    assert (loaded[1].args, loaded[1].kwargs["f"](5)) == ((1,), 15)
