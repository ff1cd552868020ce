"""The scheduler's flow-control gate with a fake clock: which tasks start when, and what is
held back. Order and counts only; time is a number the test gives."""

from __future__ import annotations

import pytest

from corral._graph import build_graph
from corral._limits import BreakerState
from corral._options import make_spec
from corral._scheduler import Scheduler
from corral._spec import ShellCommand, TaskState

S = TaskState


def spec(task_id, deps=(), **options):
    return make_spec(task_id, ShellCommand("true"), options={"depends_on": list(deps), **options})


def scheduler(*specs, concurrency=8, rate_limits=None, breakers=None, fail_fast=False):
    graph = build_graph(list(specs), rate_limits=rate_limits, breakers=breakers)
    return Scheduler(graph, concurrency=concurrency, fail_fast=fail_fast)


def ids(sched, indices):
    return [sched.graph.ids[i] for i in indices]


def test_a_task_without_flow_control_has_no_gate():
    assert scheduler(spec("a")).gate is None


def test_a_rate_limit_spaces_starts_and_the_others_flow_around():
    sched = scheduler(*(spec(f"l{k}", rate_limit="api") for k in range(4)),
                      spec("u1"), spec("u2"), rate_limits={"api": "10/s"})
    assert ids(sched, sched.admit(0.0)) == ["l0", "u1", "u2"]
    # the held tasks are ready but not queued: they hold no slot, and a timer wakes them
    assert sched.counts[S.READY] == 3
    assert sched.ready_count() == 0
    assert sched.next_wake() == pytest.approx(0.1)
    assert not sched.stalled()
    assert sched.blocked_reasons()[1] == "waits for rate limit api"
    assert sched.admit(0.05) == []
    started, times = [], []
    while (now := sched.next_wake()) is not None:  # as a driver does: wake when told
        got = ids(sched, sched.admit(now))
        assert len(got) == 1
        started += got
        times.append(now)
    assert sorted(started) == ["l1", "l2", "l3"]
    assert times == pytest.approx([0.1, 0.2, 0.3])
    assert sched.next_wake() is None


def test_a_held_task_holds_no_concurrency_slot():
    sched = scheduler(spec("l0", rate_limit="api"), spec("l1", rate_limit="api", priority=5),
                      spec("u"), concurrency=1, rate_limits={"api": "1/s"})
    assert ids(sched, sched.admit(0.0)) == ["l1"]  # priority first
    sched.succeeded(sched.graph.index["l1"], 0.1)
    # l0 comes first in the queue but must wait until 1.0: u takes the only slot meanwhile
    assert ids(sched, sched.admit(0.1)) == ["u"]
    sched.succeeded(sched.graph.index["u"], 0.2)
    assert sched.admit(0.2) == []
    assert ids(sched, sched.admit(1.0)) == ["l0"]


def test_a_burst_starts_at_once_then_the_rate_applies():
    sched = scheduler(*(spec(f"t{k}", rate_limit="llm") for k in range(5)),
                      rate_limits={"llm": {"rate": "60/m", "burst": 3}})
    assert len(sched.admit(0.0)) == 3
    assert sched.next_wake() == pytest.approx(1.0)
    assert len(sched.admit(1.0)) == 1
    assert len(sched.admit(2.0)) == 1


def test_a_task_with_two_limits_waits_for_the_slower():
    both = ["fast", "slow"]
    sched = scheduler(spec("a", rate_limit=both), spec("b", rate_limit=both),
                      rate_limits={"fast": "10/s", "slow": "1/s"})
    assert len(sched.admit(0.0)) == 1
    assert sched.next_wake() == pytest.approx(1.0)
    assert sched.admit(0.5) == []
    assert len(sched.admit(1.0)) == 1


BREAKER = {"pay": {"failures": 2, "window": 60, "reset": 30}}


def run_failures(sched, names, now):
    index = sched.graph.index
    started = ids(sched, sched.admit(now))
    assert started == names
    for name in names:
        sched.failed(index[name], now)


def test_an_open_breaker_refuses_its_tasks_and_a_probe_closes_it():
    sched = scheduler(spec("f1", breaker="pay"), spec("f2", breaker="pay"),
                      spec("c1", ["f1", "f2"], breaker="pay", trigger_rule="all_done"),
                      spec("c2", ["f1", "f2"], breaker="pay", trigger_rule="all_done"),
                      spec("free", ["f1", "f2"], trigger_rule="all_done"),
                      breakers=BREAKER)
    gate = sched.gate
    index = sched.graph.index
    run_failures(sched, ["f1", "f2"], 1.0)
    assert gate.status["pay"].state is BreakerState.OPEN
    assert [(c.breaker, c.state, c.at) for c in gate.changes] == [("pay", "open", 1.0)]
    # refused tasks are admitted and marked; the driver fails them without running them
    started = ids(sched, sched.admit(2.0))
    assert started == ["c1", "c2", "free"]
    assert sorted(gate.refused) == [index["c1"], index["c2"]]
    assert "circuit breaker 'pay' is open" in gate.refused[index["c1"]]
    for name in ("c1", "c2"):
        sched.failed(index[name], 2.0, retryable=False)
    assert gate.refused == {}
    assert gate.status["pay"].state is BreakerState.OPEN  # refusals are not failures
    assert sched.state[index["c1"]] is S.FAILED


def test_a_refused_task_is_not_retried():
    sched = scheduler(spec("f", breaker="pay", allow_failure=True, retries=1),
                      spec("c", ["f"], breaker="pay", retries=3),
                      breakers={"pay": {"failures": 2, "reset": 30}})
    f, c = sched.graph.index["f"], sched.graph.index["c"]
    assert sched.admit(0.0) == [f]
    assert sched.failed(f, 0.0) == []  # first failure: retried
    assert sched.state[f] is S.RETRY_WAIT
    assert sched.admit(5.0) == [f]
    sched.failed(f, 5.0)  # second failure: the breaker opens
    assert sched.admit(5.0) == [c]
    assert c in sched.gate.refused
    sched.failed(c, 5.0)  # as a driver reports any failure: retryable by default
    assert sched.state[c] is S.FAILED
    assert sched.attempts[c] == 1


def test_after_reset_one_probe_runs_and_the_rest_wait_for_its_outcome():
    sched = scheduler(spec("f1", breaker="pay"), spec("f2", breaker="pay"),
                      *(spec(f"c{k}", ["f1", "f2"], breaker="pay", trigger_rule="all_done")
                        for k in range(3)),
                      spec("gate_keeper", ["f1", "f2"], trigger_rule="all_done"),
                      breakers=BREAKER, concurrency=8)
    index = sched.graph.index
    # f1 and f2 fail at 1.0, which opens the breaker; the driver next admits after the reset
    run_failures(sched, ["f1", "f2"], 1.0)
    started = ids(sched, sched.admit(31.0))  # reset has passed
    probe = [t for t in started if t.startswith("c")]
    assert len(probe) == 1
    assert "gate_keeper" in started
    gate = sched.gate
    assert gate.status["pay"].state is BreakerState.HALF_OPEN
    assert gate.refused == {}
    held = [i for i in gate.holds if sched.state[i] is S.READY]
    assert len(held) == 2
    assert sched.blocked_reasons()[held[0]] == "waits for circuit breaker 'pay'"
    assert sched.admit(32.0) == []  # nothing new until the probe ends
    sched.succeeded(index[probe[0]], 33.0)
    assert gate.status["pay"].state is BreakerState.CLOSED
    assert len(sched.admit(33.0)) == 2
    assert [c.state for c in gate.changes] == ["open", "half_open", "closed"]


def test_a_failed_probe_opens_the_breaker_again():
    sched = scheduler(spec("f1", breaker="pay"), spec("f2", breaker="pay"),
                      spec("p", ["f1", "f2"], breaker="pay", trigger_rule="all_done"),
                      spec("q", ["f1", "f2"], breaker="pay", trigger_rule="all_done"),
                      breakers=BREAKER)
    index = sched.graph.index
    run_failures(sched, ["f1", "f2"], 1.0)
    probe = sched.admit(31.0)
    assert len(probe) == 1
    sched.failed(probe[0], 32.0)
    assert sched.gate.status["pay"].state is BreakerState.OPEN
    # the other one, released by the change, now meets the open breaker again: refused
    other = sched.admit(32.0)
    assert other == [index["q"] if probe[0] == index["p"] else index["p"]]
    assert other[0] in sched.gate.refused


def test_on_open_wait_holds_tasks_until_the_breaker_half_opens():
    sched = scheduler(spec("f1", breaker="pay"), spec("f2", breaker="pay"),
                      spec("w", ["f1", "f2"], breaker="pay", trigger_rule="all_done"),
                      breakers={"pay": {**BREAKER["pay"], "on_open": "wait"}})
    run_failures(sched, ["f1", "f2"], 1.0)
    assert sched.admit(2.0) == []
    assert sched.next_wake() == pytest.approx(31.0)
    assert not sched.stalled()
    assert ids(sched, sched.admit(31.0)) == ["w"]
    assert sched.gate.refused == {}


def test_a_stop_cancels_held_tasks():
    sched = scheduler(spec("a", rate_limit="api"), spec("b", rate_limit="api"),
                      rate_limits={"api": "1/s"})
    assert len(sched.admit(0.0)) == 1
    running = sched.stop(0.5)
    assert len(running) == 1
    sched.cancelled(running[0], 0.5)
    assert not sched.is_active()
    assert sched.admit(1.0) == []


def test_fail_fast_on_a_refusal_cancels_what_waits():
    sched = scheduler(spec("f1", breaker="pay", allow_failure=True),
                      spec("f2", breaker="pay", allow_failure=True),
                      spec("c", ["f1", "f2"], breaker="pay"),
                      spec("later", ["c"]), spec("slow", rate_limit="api"),
                      spec("slow2", rate_limit="api"),
                      breakers=BREAKER, rate_limits={"api": "1/s"}, fail_fast=True)
    index = sched.graph.index
    assert sorted(ids(sched, sched.admit(0.0))) == ["f1", "f2", "slow"]
    sched.failed(index["f1"], 1.0)
    sched.failed(index["f2"], 1.0)
    sched.succeeded(index["slow"], 1.0)
    started = ids(sched, sched.admit(1.0))
    assert "c" in started
    assert index["c"] in sched.gate.refused
    sched.failed(index["c"], 1.0, retryable=False)
    assert sched.state[index["later"]] is S.UPSTREAM_FAILED
    assert sched.state[index["c"]] is S.FAILED
    assert sched.stopping  # fail-fast: a refusal is a failure like any other
