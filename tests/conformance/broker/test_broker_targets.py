"""Attempts sent to one worker (a balancing strategy's target), on every broker: only that
worker claims them while it lives; once it is gone, what it had not claimed is free for any
worker of the queue, and what it held is reclaimed as any silent worker's is.

Waits here are waits *past* a heartbeat timeout, never assertions on how long something took.
"""

from __future__ import annotations

import time
from dataclasses import replace

from tests.conformance.broker.test_broker_contract import message

from corral.executors._base import OK
from corral.fleet._broker import WorkerInfo
from corral.fleet._protocol import END, Event, dump_outcome


def sent_to(n: int, worker: str | None) -> object:
    return replace(message(n), worker=worker)


def alive(broker, *ids: str) -> None:
    now = time.time()
    for w in ids:
        broker.register(WorkerInfo(id=w, host="h", pid=1, queues=("default",), concurrency=2,
                                   started_at=now, last_beat=now))


def test_an_attempt_sent_to_a_worker_is_claimed_by_it_only(open_test_broker):
    broker = open_test_broker(heartbeat_timeout=60)
    alive(broker, "a", "b")
    broker.enqueue([sent_to(1, "a"), sent_to(2, None), sent_to(3, "b")])
    got_b = broker.claim("b", ["default"], 10, block_s=1)
    assert sorted(c.message.task_id for c in got_b) == ["t2", "t3"]
    assert broker.claim("b", ["default"], 10, block_s=0.05) == []
    assert broker.reclaim("b", ["default"], 10) == []  # "a" lives: its attempt stays its own
    (got_a,) = broker.claim("a", ["default"], 10, block_s=1)
    assert (got_a.message.task_id, got_a.message.worker, got_a.target) == ("t1", "a", "a")
    assert broker.renew("a", [got_a]) == []
    broker.finish([(got_a, Event(END, got_a.message.id, "a", dump_outcome(OK, 1, limit=100)))])
    assert broker.states([got_a.message.id]) == ["done"]
    _, events = broker.read_events("run:s", "0", block_s=1, count=10)
    assert [(e.kind, e.attempt) for e in events] == [(END, got_a.message.id)]


def test_an_unclaimed_attempt_of_a_gone_worker_goes_to_any_worker(open_test_broker):
    patient = open_test_broker(heartbeat_timeout=60)
    alive(patient, "a", "b")
    patient.enqueue([sent_to(1, "a"), sent_to(2, "ghost")])  # "ghost" never registered
    patient.reclaim("b", ["default"], 10)
    (freed,) = patient.claim("b", ["default"], 10, block_s=1)
    assert (freed.message.task_id, freed.target) == ("t2", None)
    assert patient.claim("b", ["default"], 10, block_s=0.05) == []  # t1 waits for "a"
    patient.skip([freed])
    hasty = open_test_broker(heartbeat_timeout=0.3)
    alive(hasty, "b")
    time.sleep(0.5)  # "a" missed its beats
    alive(hasty, "b")
    assert hasty.reclaim("b", ["default"], 10) == []  # nobody held it: nothing to reclaim
    (got,) = hasty.claim("b", ["default"], 10, block_s=1)
    assert (got.message.task_id, got.target, got.deliveries) == ("t1", None, 1)
    hasty.finish([(got, Event(END, got.message.id, "b", dump_outcome(OK, 1, limit=100)))])
    assert hasty.states([got.message.id]) == ["done"]


def test_a_stopped_workers_unclaimed_attempt_goes_to_any_worker(open_test_broker):
    broker = open_test_broker(heartbeat_timeout=60)
    alive(broker, "a", "b")
    broker.enqueue([sent_to(1, "a")])
    broker.deregister("a")
    broker.reclaim("b", ["default"], 10)
    assert [c.message.task_id for c in broker.claim("b", ["default"], 10, block_s=1)] == ["t1"]


def test_a_silent_workers_claimed_attempt_is_reclaimed_by_another(open_test_broker):
    broker = open_test_broker(heartbeat_timeout=0.3)
    alive(broker, "a", "b")
    broker.enqueue([sent_to(1, "a")])
    (held,) = broker.claim("a", ["default"], 10, block_s=1)
    time.sleep(0.5)  # "a" goes silent past the timeout, holding it
    alive(broker, "b")
    (taken,) = broker.reclaim("b", ["default"], 10)
    assert (taken.message.task_id, taken.deliveries) == ("t1", 2)
    assert broker.renew("a", [held]) == [held]  # "a" learns it lost it
    assert broker.renew("b", [taken]) == []
    broker.finish([(taken, Event(END, taken.message.id, "b", dump_outcome(OK, 1, limit=100)))])
    assert broker.states([taken.message.id]) == ["done"]
    assert broker.reclaim("b", ["default"], 10) == []
    assert broker.claim("b", ["default"], 10, block_s=0.05) == []


def test_a_handed_back_attempt_of_a_workers_own_is_reclaimed_by_another(open_test_broker):
    broker = open_test_broker(heartbeat_timeout=60)
    alive(broker, "a", "b")
    broker.enqueue([sent_to(1, "a")])
    (held,) = broker.claim("a", ["default"], 10, block_s=1)
    broker.hand_back("a", [held])  # "a" stops (Ctrl-C)
    (taken,) = broker.reclaim("b", ["default"], 10)
    assert (taken.message.task_id, taken.deliveries) == ("t1", 2)


def test_a_claim_takes_no_more_than_asked_over_all_its_queues(open_test_broker):
    broker = open_test_broker(heartbeat_timeout=60)
    alive(broker, "a")
    broker.enqueue([sent_to(1, "a"), sent_to(2, None),
                    replace(message(3, queue="other"), worker="a"), message(4, queue="other")])
    got = broker.claim("a", ["default", "other"], 3, block_s=1)
    assert len(got) == 3
    got += broker.claim("a", ["default", "other"], 3, block_s=1)
    assert sorted(c.message.task_id for c in got) == ["t1", "t2", "t3", "t4"]
