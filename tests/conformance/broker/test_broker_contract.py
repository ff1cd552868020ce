"""What every broker must do, generated once per broker in ``conftest.FACTORIES``.

Waits here are hang guards or waits *past* a heartbeat timeout (so that an entry is surely
idle), never assertions on how long something took.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from corral._errors import BrokenBroker
from corral.executors._base import ERROR, OK
from corral.fleet._broker import WorkerInfo, open_broker
from corral.fleet._protocol import (
    END,
    START,
    AttemptBody,
    AttemptMessage,
    BodyWriter,
    Event,
    dump_outcome,
    load_outcome,
)

BODY = BodyWriter().dump(AttemptBody(fn=print, args=(), kwargs={}, env=None, cwd=None,
                                     heartbeat=None, log_path=None))


def message(n: int, *, queue: str = "default", reply: str = "run:s") -> AttemptMessage:
    return AttemptMessage(id=f"s:{n}:1", run_id="run", task_id=f"t{n}", queue=queue,
                          executor="thread", reply=reply, body=BODY, resources={"gpu": 1.0})


def test_a_queued_attempt_is_claimed_once_and_its_outcome_reaches_the_reply(open_test_broker):
    broker = open_test_broker()
    broker.enqueue([message(1), message(2, queue="other")])
    claimed = broker.claim("a", ["default"], 10, block_s=1)
    assert [c.message for c in claimed] == [message(1)]
    assert claimed[0].deliveries == 1
    assert broker.claim("b", ["default"], 10, block_s=0.05) == []
    started = 1_790_000_000.123456  # the worker's clock when it started the attempt
    broker.finish([(claimed[0], Event(END, "s:1:1", "a", dump_outcome(OK, 42, limit=1000),
                                      at=started))],
                  [("run:s", Event(START, "s:1:1", "a", at=started))])  # events come first
    _, events = broker.read_events("run:s", "0", block_s=1, count=10)
    assert [(e.kind, e.attempt) for e in events] == [(START, "s:1:1"), (END, "s:1:1")]
    assert load_outcome(events[1].data) == (OK, 42)
    assert [e.at for e in events] == [started, started]  # the coordinator's start latency
    assert broker.states(["s:1:1", "s:2:1"]) == ["done", None]
    other = broker.claim("b", ["other"], 10, block_s=1)
    assert [c.message.task_id for c in other] == ["t2"]


def test_attempts_are_claimed_in_the_order_they_were_queued(open_test_broker):
    broker = open_test_broker()
    broker.enqueue([message(k) for k in range(5)])
    broker.enqueue([message(k) for k in range(5, 8)])
    got = broker.claim("a", ["default"], 3, block_s=1)
    got += broker.claim("b", ["default"], 10, block_s=1)
    assert [c.message.task_id for c in got] == [f"t{k}" for k in range(8)]
    assert len({c.entry for c in got}) == 8


def test_a_duplicate_outcome_is_posted_and_harms_nothing(open_test_broker):
    # "a" is written off (silent past the timeout) and "b" runs the attempt again: both
    # finish it. The first finish acknowledges it; "b" learns at its renewal that it no longer
    # holds it; its END is posted too (the coordinator takes the first and ignores the other).
    broker = open_test_broker(heartbeat_timeout=0.3)
    broker.enqueue([message(1)])
    (first,) = broker.claim("a", ["default"], 1, block_s=1)
    time.sleep(0.5)
    (second,) = broker.reclaim("b", ["default"], 1)
    end = dump_outcome(OK, 1, limit=1000)
    broker.finish([(first, Event(END, "s:1:1", "a", end))])
    assert broker.renew("b", [second]) == [second]
    broker.finish([(second, Event(END, "s:1:1", "b", end))])
    _, events = broker.read_events("run:s", "0", block_s=1, count=10)
    assert [(e.kind, e.worker) for e in events] == [(END, "a"), (END, "b")]
    assert broker.states(["s:1:1"]) == ["done"]
    time.sleep(0.5)
    assert broker.reclaim("c", ["default"], 10) == []  # acknowledged: nothing held any more
    assert broker.claim("c", ["default"], 10, block_s=0.05) == []


def test_an_attempt_sent_twice_is_queued_once_on_a_broker_that_can(open_test_broker):
    broker = open_test_broker()
    broker.enqueue([message(1)])
    broker.enqueue([message(1)])  # a coordinator's retry after a lost answer
    got = broker.claim("a", ["default"], 10, block_s=1)
    got += broker.claim("a", ["default"], 10, block_s=0.05)
    assert [c.message.id for c in got] in (["s:1:1"], ["s:1:1", "s:1:1"])  # Redis: twice
    broker.finish([(got[0], Event(END, "s:1:1", "a", dump_outcome(OK, 1, limit=1000)))])
    assert broker.states(["s:1:1"]) == ["done"]  # a second copy is skipped by its worker


def test_one_enqueue_may_hold_attempts_of_several_runs_each_arriving_whole(open_test_broker):
    broker = open_test_broker()
    sent = [message(1), replace(message(2, reply="run2:s"), run_id="run2"),
            replace(message(3), resources=None, executor="shell", max_value_bytes=77)]
    broker.enqueue(sent)
    claimed = broker.claim("a", ["default"], 10, block_s=1)
    assert {c.message.id: c.message for c in claimed} == {m.id: m for m in sent}


def test_a_batch_of_outcomes_reaches_each_reply_in_order_after_its_events(open_test_broker):
    broker = open_test_broker()
    replies = {1: "run:a", 2: "run:b", 3: "run:a", 4: "run:a"}
    broker.enqueue([message(n, reply=reply) for n, reply in replies.items()])
    claimed = {c.message.id: c for c in broker.claim("w", ["default"], 10, block_s=1)}
    ends = [(claimed[f"s:{n}:1"], Event(END, f"s:{n}:1", "w", dump_outcome(OK, n, limit=100),
                                        at=float(n))) for n in replies]
    events = [("run:a", Event(START, "s:9:1", "w")),
              ("run:a", Event("o", "s:9:1", "w", b"output")),
              ("run:b", Event(START, "s:8:1", "w", at=8.0))]
    broker.finish(ends, events)
    _, a = broker.read_events("run:a", "0", block_s=1, count=100)
    _, b = broker.read_events("run:b", "0", block_s=1, count=100)
    assert [(e.kind, e.attempt, e.data, e.at) for e in a[:2]] == [
        (START, "s:9:1", b"", None), ("o", "s:9:1", b"output", None)]
    assert [(e.kind, e.attempt, load_outcome(e.data), e.at) for e in a[2:]] == [
        (END, f"s:{n}:1", (OK, n), float(n)) for n in (1, 3, 4)]
    assert [(e.kind, e.attempt, e.at) for e in b] == [(START, "s:8:1", 8.0), (END, "s:2:1", 2.0)]
    assert broker.states([f"s:{n}:1" for n in replies]) == ["done"] * 4


def test_a_large_batch_of_outcomes_arrives_whole(open_test_broker):
    broker = open_test_broker()
    n = 1500  # more than one script call may gather in one stream entry
    broker.enqueue([message(k) for k in range(n)])
    claimed = broker.claim("w", ["default"], n, block_s=1)
    assert len(claimed) == n
    broker.finish([(c, Event(END, c.message.id, "w", dump_outcome(OK, k, limit=100)))
                   for k, c in enumerate(claimed)])
    events, position = [], "0"
    while len(events) < n:
        position, more = broker.read_events("run:s", position, block_s=1, count=100)
        assert more, "hang guard: outcomes missing"
        events += more
    assert [load_outcome(e.data) for e in events] == [(OK, k) for k in range(n)]


def test_reading_events_goes_on_from_the_position(open_test_broker):
    broker = open_test_broker()
    broker.post([("r", Event(START, f"x:{k}", "w")) for k in range(3)])
    position, first = broker.read_events("r", "0", block_s=1, count=2)
    position, rest = broker.read_events("r", position, block_s=1, count=10)
    assert [e.attempt for e in first + rest] == ["x:0", "x:1", "x:2"]
    assert broker.read_events("r", position, block_s=0.05, count=10) == (position, [])


def test_a_renewed_attempt_is_not_reclaimed_and_a_silent_one_is(open_test_broker):
    broker = open_test_broker(heartbeat_timeout=0.5)
    broker.enqueue([message(1)])
    held = broker.claim("a", ["default"], 1, block_s=1)
    time.sleep(0.7)  # past the timeout: idle, unless renewed
    assert broker.renew("a", held) == []
    assert broker.reclaim("b", ["default"], 10) == []  # renewed just now: "a" is alive
    time.sleep(0.7)  # "a" goes silent past the timeout
    taken = broker.reclaim("b", ["default"], 10)
    assert [c.message.id for c in taken] == ["s:1:1"]
    assert taken[0].deliveries == 2
    assert broker.renew("a", held) == held  # "a" lost it, and is told so


def test_a_handed_back_attempt_is_reclaimed_at_once(open_test_broker):
    broker = open_test_broker(heartbeat_timeout=60)
    broker.enqueue([message(1)])
    held = broker.claim("a", ["default"], 1, block_s=1)
    assert broker.reclaim("b", ["default"], 10) == []
    broker.hand_back("a", held)
    assert [c.message.id for c in broker.reclaim("b", ["default"], 10)] == ["s:1:1"]


def test_cancel_and_skip(open_test_broker):
    broker = open_test_broker(heartbeat_timeout=0.2)
    broker.enqueue([message(1)])
    broker.cancel(["s:1:1"])
    held = broker.claim("a", ["default"], 1, block_s=1)
    assert broker.states(["s:1:1"]) == ["cancelled"]
    broker.skip(held)
    time.sleep(0.4)
    assert broker.reclaim("b", ["default"], 10) == []  # acknowledged: nothing pending


def test_one_coordinator_per_run(open_test_broker):
    broker = open_test_broker()
    first = broker.acquire_lease("run-1", "one", 30)
    with pytest.raises(BrokenBroker, match="already has a live coordinator"):
        broker.acquire_lease("run-1", "two", 30)
    assert broker.renew_lease("run-1", "one", 30)
    assert not broker.renew_lease("run-1", "two", 30)
    broker.release_lease("run-1", "one")
    assert broker.acquire_lease("run-1", "two", 30) > first  # fenced: a newer token


def test_dead_letters_list_show_retry_purge(open_test_broker):
    broker = open_test_broker()
    broker.enqueue([message(1), message(2)])
    held = broker.claim("a", ["default"], 2, block_s=1)
    for c in held:
        end = Event(END, c.message.id, "a", dump_outcome(ERROR, RuntimeError("x"), limit=10**6))
        broker.dead_letter(c, "too many deliveries", ["died once", "died twice"], end)
    letters = broker.dead_letters()
    assert [(d.task_id, d.reason) for d in letters] == [("t1", "too many deliveries"),
                                                        ("t2", "too many deliveries")]
    shown = broker.dead_letter_entry(letters[0].id)
    assert shown is not None
    assert shown.message == message(1)
    assert shown.history == ("died once", "died twice")
    _, events = broker.read_events("run:s", "0", block_s=1, count=10)
    assert [e.kind for e in events] == [END, END]  # the run is told at once
    assert broker.retry_dead_letter(letters[0].id) == message(1)
    assert [c.message.id for c in broker.claim("b", ["default"], 5, block_s=1)] == ["s:1:1"]
    assert broker.states(["s:1:1"]) == [None]  # queued again: not done any more
    assert broker.purge_dead_letters() == 1
    assert broker.dead_letters() == []
    assert broker.dead_letter_entry(letters[1].id) is None


def test_workers_register_and_go(open_test_broker):
    broker = open_test_broker(heartbeat_timeout=0.3)
    now = time.time()
    broker.register(WorkerInfo(id="w1", host="h", pid=1, queues=("default", "gpu"),
                               concurrency=4, resources={"gpu": 1.0}, running=2,
                               started_at=now, last_beat=now, weight=3))
    (w,) = broker.workers()
    assert (w.id, w.queues, w.concurrency, w.running, w.resources, w.state, w.weight) == \
        ("w1", ("default", "gpu"), 4, 2, {"gpu": 1.0}, "running", 3)
    time.sleep(0.5)
    assert [w.state for w in broker.workers()] == ["gone"]  # missed its beats
    broker.deregister("w1")
    assert broker.workers() == []


def test_a_workers_health_figures_round_trip(open_test_broker):
    broker = open_test_broker()
    now = time.time()
    broker.register(WorkerInfo(id="w1", host="h", pid=1, queues=("default",), concurrency=4,
                               done=12, failed=3, busy_s=4.5, started_at=now, last_beat=now,
                               window_s=300, recent_done=5, recent_failed=2, recent_busy_s=1.5,
                               pool="h-9-abcd"))
    broker.register(WorkerInfo(id="w2", host="h", pid=2, queues=("default",), concurrency=4,
                               started_at=now, last_beat=now))
    got = {w.id: w for w in broker.workers()}
    w = got["w1"]
    assert (w.done, w.failed, w.busy_s) == (12, 3, 4.5)
    assert (w.window_s, w.recent_done, w.recent_failed, w.recent_busy_s, w.pool) == \
        (300, 5, 2, 1.5, "h-9-abcd")
    assert (got["w2"].window_s, got["w2"].pool) == (0, None)  # no window, no pool


def test_the_queue_depth_counts_what_no_worker_holds(open_test_broker):
    broker = open_test_broker()
    assert broker.queue_depth(["default", "never-used"]) == 0
    broker.enqueue([message(k) for k in range(5)] + [message(9, queue="other")])
    assert broker.queue_depth(["default"]) == 5
    held = broker.claim("a", ["default"], 2, block_s=1)
    assert broker.queue_depth(["default"]) == 3
    assert broker.queue_depth(["default", "other"]) == 4
    broker.finish([(c, Event(END, c.message.id, "a", dump_outcome(OK, 1, limit=100)))
                   for c in held])
    assert broker.queue_depth(["default"]) == 3
    broker.hand_back("a", broker.claim("a", ["default"], 1, block_s=1))
    # Handed back: pending until a worker's next reclaim takes it (within a beat), not queued.
    assert broker.queue_depth(["default"]) == 2


def test_the_saturation_is_a_share(open_test_broker):
    broker = open_test_broker()
    assert 0 < broker.saturation() <= 1  # this test's own connection counts


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:1/0", "redis://no-such-host.invalid/0", "redis://127.0.0.1:6379/notadb",
    "postgresql://u:secret@127.0.0.1:1/test", "postgresql://no-such-host.invalid/test",
    "postgresql://127.0.0.1:5432/test?schema=Not-A-Name",
    "postgresql://127.0.0.1:5432/test?nonsense=1", "ftp://x", "nonsense"])
def test_an_unusable_url_says_why(url):
    with pytest.raises(BrokenBroker) as caught:
        open_broker(url)
    assert str(caught.value)
    assert "secret" not in str(caught.value)  # the password is hidden
