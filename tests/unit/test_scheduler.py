"""The scheduler as a pure state machine: feed events, assert the whole state.

No threads, no sleeps."""

from __future__ import annotations

import random

import pytest

from corral._errors import InvalidTransition
from corral._graph import build_graph
from corral._options import make_spec
from corral._scheduler import Scheduler
from corral._spec import ShellCommand, TaskState

S = TaskState


def spec(task_id, deps=(), **options):
    return make_spec(task_id, ShellCommand("true"), options={"depends_on": list(deps), **options})


def graph(*specs, capacity=None, executors=None):
    return build_graph(list(specs), capacity=capacity, executors=executors)


def states(sched):
    return {sched.graph.ids[i]: str(s) for i, s in enumerate(sched.state)}


def ids(sched, indices):
    return [sched.graph.ids[i] for i in indices]


def test_linear_chain_runs_in_order():
    g = graph(spec("a"), spec("b", ["a"]), spec("c", ["b"]))
    s = Scheduler(g, concurrency=4)
    assert states(s) == {"a": "ready", "b": "pending", "c": "pending"}
    assert ids(s, s.admit(0)) == ["a"]
    assert s.admit(0) == []
    s.succeeded(0, 1)
    assert states(s) == {"a": "succeeded", "b": "ready", "c": "pending"}
    assert ids(s, s.admit(1)) == ["b"]
    s.succeeded(1, 2)
    assert ids(s, s.admit(2)) == ["c"]
    s.succeeded(2, 3)
    assert not s.is_active()
    assert s.counts[S.SUCCEEDED] == 3


def test_priority_then_critical_path_rank_orders_ready_tasks():
    # 'long' heads a longer chain than 'short', so it goes first at equal priority;
    # 'urgent' has a higher priority and beats both.
    g = graph(
        spec("short", estimate=1),
        spec("long", estimate=1),
        spec("long2", ["long"], estimate=5),
        spec("urgent", estimate=0.1, priority=5),
    )
    s = Scheduler(g, concurrency=1)
    order = []
    while s.is_active():
        (i,) = s.admit(0)
        order.append(g.ids[i])
        s.succeeded(i, 0)
    assert order == ["urgent", "long", "long2", "short"]


def test_concurrency_limit_is_respected():
    g = graph(*[spec(f"t{i}") for i in range(10)])
    s = Scheduler(g, concurrency=3)
    assert len(s.admit(0)) == 3
    assert s.admit(0) == []
    s.succeeded(0, 1)
    assert len(s.admit(1)) == 1


def test_resources_gate_admission_and_are_released():
    g = graph(
        spec("g1", resources={"gpu": 1}),
        spec("g2", resources={"gpu": 1}),
        spec("free"),
        capacity={"gpu": 1},
    )
    s = Scheduler(g, concurrency=8)
    started = ids(s, s.admit(0))
    assert sorted(started) == ["free", "g1"]
    assert s.free[s.resource_names.index("gpu")] == 0
    s.succeeded(g.index["g1"], 1)
    assert ids(s, s.admit(1)) == ["g2"]


def test_large_task_is_not_starved_by_small_ones():
    # big needs 2 cpu; a stream of small 1-cpu tasks keeps arriving. Once big is at the
    # head of the queue, small ones may not take the cpu it waits for.
    small = [spec(f"s{i}", resources={"cpu": 1}, priority=0) for i in range(6)]
    big = spec("big", resources={"cpu": 2}, priority=1)
    starter = spec("starter", resources={"cpu": 1}, priority=2)
    g = graph(starter, big, *small, capacity={"cpu": 2})
    s = Scheduler(g, concurrency=8)
    assert ids(s, s.admit(0)) == ["starter"]  # big does not fit beside it; smalls must wait
    assert s.counts[S.RUNNING] == 1
    s.succeeded(g.index["starter"], 1)
    assert ids(s, s.admit(1)) == ["big"]


def test_unrelated_tasks_flow_around_a_blocked_one():
    g = graph(
        spec("hold", resources={"gpu": 1}, priority=3),
        spec("wait", resources={"gpu": 1}, priority=2),
        spec("cpu_only", resources={"cpu": 1}),
        capacity={"gpu": 1, "cpu": 4},
    )
    s = Scheduler(g, concurrency=8)
    assert ids(s, s.admit(0)) == ["hold", "cpu_only"]


def test_fail_fast_cancels_everything_not_started_and_returns_running():
    g = graph(spec("a"), spec("b"), spec("c", ["a"]), spec("d"))
    s = Scheduler(g, concurrency=2, fail_fast=True)
    running = ids(s, s.admit(0))
    assert running == ["a", "b"]
    to_cancel = s.failed(g.index["a"], 1)
    assert ids(s, to_cancel) == ["b"]
    s.cancelled(g.index["b"], 1)
    assert states(s) == {"a": "failed", "b": "cancelled", "c": "upstream_failed", "d": "cancelled"}
    assert not s.is_active()


def test_keep_going_runs_what_does_not_depend_on_the_failure():
    g = graph(spec("a"), spec("b", ["a"]), spec("c", ["b"]), spec("d"), spec("e", ["d"]))
    s = Scheduler(g, concurrency=1, fail_fast=False)
    while s.is_active():
        for i in s.admit(0):
            if g.ids[i] == "a":
                assert s.failed(i, 0) == []
            else:
                s.succeeded(i, 0)
    assert states(s) == {
        "a": "failed", "b": "upstream_failed", "c": "upstream_failed",
        "d": "succeeded", "e": "succeeded",
    }


def test_allow_failure_satisfies_dependents_and_does_not_stop_the_run():
    g = graph(spec("flaky", allow_failure=True), spec("next", ["flaky"]), spec("other"))
    s = Scheduler(g, concurrency=1, fail_fast=True)
    while s.is_active():
        for i in s.admit(0):
            if g.ids[i] == "flaky":
                assert s.failed(i, 0) == []
            else:
                s.succeeded(i, 0)
    assert states(s) == {"flaky": "failed", "next": "succeeded", "other": "succeeded"}


def test_all_done_runs_after_a_failed_dependency_with_keep_going():
    g = graph(spec("build"), spec("clean", ["build"], trigger_rule="all_done"))
    s = Scheduler(g, concurrency=1, fail_fast=False)
    (i,) = s.admit(0)
    s.failed(i, 0)
    assert ids(s, s.admit(0)) == ["clean"]


def test_all_done_cleanup_still_runs_under_fail_fast():
    # test fails: the rest is cancelled, but the cleanup runs once its dependencies ended
    # (here: test failed, build cancelled), and what depends on the cleanup does not.
    g = graph(spec("test"), spec("build", ["test"]), spec("lint"),
              spec("clean", ["build", "lint"], trigger_rule="all_done"),
              spec("notify", ["clean"]))
    s = Scheduler(g, concurrency=2, fail_fast=True, record=True)
    assert ids(s, s.admit(0)) == ["test", "lint"]
    assert ids(s, s.failed(g.index["test"], 1)) == ["lint"]
    assert s.admit(1) == []  # clean still waits for lint to end
    s.cancelled(g.index["lint"], 1)
    assert states(s) == {"test": "failed", "build": "upstream_failed", "lint": "cancelled",
                         "clean": "ready", "notify": "cancelled"}
    assert ids(s, s.admit(2)) == ["clean"]
    s.succeeded(g.index["clean"], 3)
    assert not s.is_active()


def test_a_spared_cleanup_keeps_its_retries_and_its_own_dependencies_decide():
    g = graph(spec("a"), spec("b"), spec("c", ["b"]),
              spec("clean", ["c"], trigger_rule="all_done", retries=1, retry_delay=1,
                   retry_jitter=0),
              spec("after_a", ["a"], trigger_rule="all_done"))
    s = Scheduler(g, concurrency=2, fail_fast=True)
    assert sorted(ids(s, s.admit(0))) == ["a", "b"]
    s.succeeded(g.index["a"], 0)  # after_a's dependency ended: ready before the failure
    assert ids(s, s.failed(g.index["b"], 1)) == []  # nothing else was running
    # c never ran (upstream failed): clean's dependencies have ended, so it may run. (Equal
    # ranks: after_a, ready first, starts first.)
    assert ids(s, s.admit(1)) == ["after_a", "clean"]
    assert s.failed(g.index["clean"], 2) == []
    assert states(s)["clean"] == "retry_wait"
    assert ids(s, s.admit(3)) == ["clean"]  # its retry, after its backoff
    s.succeeded(g.index["clean"], 4)
    s.succeeded(g.index["after_a"], 4)
    assert not s.is_active()


def test_a_running_cleanup_is_not_cancelled_by_fail_fast():
    g = graph(spec("clean", trigger_rule="all_done"), spec("a"), spec("b"))
    s = Scheduler(g, concurrency=3, fail_fast=True)
    s.admit(0)
    assert ids(s, s.failed(g.index["a"], 1)) == ["b"]
    s.cancelled(g.index["b"], 1)
    assert states(s)["clean"] == "running"
    s.succeeded(g.index["clean"], 2)
    assert not s.is_active()


def test_an_interrupt_starts_nothing_new_not_even_cleanup():
    g = graph(spec("a"), spec("clean", ["a"], trigger_rule="all_done"))
    s = Scheduler(g, concurrency=2, fail_fast=True)
    s.admit(0)
    assert ids(s, s.stop(1)) == ["a"]
    s.cancelled(g.index["a"], 1)
    assert states(s) == {"a": "cancelled", "clean": "cancelled"}
    assert s.admit(2) == []
    assert not s.is_active()


def test_an_interrupt_after_fail_fast_cancels_the_spared_cleanup():
    g = graph(spec("a"), spec("b"), spec("clean", ["b"], trigger_rule="all_done"))
    s = Scheduler(g, concurrency=2, fail_fast=True)
    s.admit(0)
    assert ids(s, s.failed(g.index["a"], 1)) == ["b"]
    assert ids(s, s.stop(1)) == ["b"]  # Ctrl-C while b is being cancelled
    s.cancelled(g.index["b"], 1)
    assert states(s)["clean"] == "cancelled"
    assert s.admit(2) == []
    assert not s.is_active()


def test_retry_waits_out_its_backoff_as_computed_time():
    g = graph(spec("a", retries=2, retry_delay=10, retry_backoff=3, retry_jitter=0))
    s = Scheduler(g, concurrency=1, rng=random.Random(1))
    s.admit(0)
    s.failed(0, 100)
    assert states(s) == {"a": "retry_wait"}
    assert s.next_wake() == 110
    assert s.admit(109.9) == []
    assert s.admit(110) == [0]
    assert s.attempts[0] == 2
    s.failed(0, 111)
    assert s.next_wake() == 111 + 30
    s.admit(141)
    s.failed(0, 142)  # third attempt fails: no retries left
    assert states(s) == {"a": "failed"}
    assert s.attempts[0] == 3


def test_jitter_shortens_the_delay_within_its_fraction():
    g = graph(spec("a", retries=1, retry_delay=10, retry_jitter=0.5))
    s = Scheduler(g, concurrency=1, rng=random.Random(7))
    s.admit(0)
    s.failed(0, 0)
    wake = s.next_wake()
    assert wake is not None
    assert 5 <= wake <= 10


def test_non_retryable_failure_is_final_at_once():
    g = graph(spec("a", retries=5))
    s = Scheduler(g, concurrency=1)
    s.admit(0)
    s.failed(0, 0, retryable=False)
    assert states(s) == {"a": "failed"}


def test_deadlines_expire_only_the_current_attempt():
    g = graph(spec("a", timeout=5, retries=1, retry_delay=0, retry_jitter=0), spec("b"))
    s = Scheduler(g, concurrency=2)
    s.admit(0)
    assert s.next_wake() == 5
    assert s.expired(4.9) == []
    assert s.expired(5) == [0]
    s.failed(0, 5)
    s.admit(5)  # attempt 2 with a new deadline at 10
    assert s.expired(6) == []
    assert s.expired(10) == [0]


def test_skip_propagates_to_all_success_dependents_only():
    g = graph(spec("a"), spec("b", ["a"]), spec("c", ["a"], trigger_rule="all_done"))
    s = Scheduler(g, concurrency=4)
    s.admit(0)
    s.skipped(0, 0)
    assert states(s) == {"a": "skipped", "b": "skipped", "c": "ready"}


def test_stop_cancels_waiting_retries_and_ready_tasks():
    g = graph(spec("a", retries=3), spec("b"), spec("c"))
    s = Scheduler(g, concurrency=2)
    s.admit(0)
    s.failed(0, 0)  # a waits to retry
    running = s.stop(0)
    assert ids(s, running) == ["b"]
    s.cancelled(g.index["b"], 0)
    assert states(s) == {"a": "cancelled", "b": "cancelled", "c": "cancelled"}
    assert not s.is_active()
    assert s.admit(100) == []


def test_done_tasks_start_succeeded_and_release_their_dependents():
    g = graph(spec("a"), spec("b", ["a"]), spec("c", ["b"]))
    s = Scheduler(g, concurrency=1, done=[0, 1])
    assert states(s) == {"a": "succeeded", "b": "succeeded", "c": "ready"}


@pytest.mark.parametrize(
    ("call", "state_needed"),
    [("succeeded", "running"), ("failed", "running"), ("skipped", "running"),
     ("cancelled", "running")],
)
def test_outcome_for_a_task_that_is_not_running_raises(call, state_needed):
    g = graph(spec("a"))
    s = Scheduler(g, concurrency=1)
    with pytest.raises(InvalidTransition, match="only a running task"):
        getattr(s, call)(0, 0)


def test_outcome_reported_twice_raises():
    g = graph(spec("a"))
    s = Scheduler(g, concurrency=1)
    s.admit(0)
    s.succeeded(0, 0)
    with pytest.raises(InvalidTransition, match="'a' cannot go from succeeded"):
        s.succeeded(0, 0)


def test_transitions_are_recorded_only_when_asked():
    g = graph(spec("a"), spec("b", ["a"]))
    quiet = Scheduler(g, concurrency=1)
    quiet.admit(0)
    assert quiet.drain_transitions() == []
    loud = Scheduler(g, concurrency=1, record=True)
    loud.admit(0)
    loud.succeeded(0, 0)
    assert [(g.ids[i], str(st), a) for i, st, a in loud.drain_transitions()] == [
        ("a", "ready", 0), ("a", "running", 1), ("a", "succeeded", 1), ("b", "ready", 0),
    ]
    assert loud.drain_transitions() == []


def test_concurrency_must_be_positive():
    with pytest.raises(ValueError, match="concurrency"):
        Scheduler(graph(spec("a")), concurrency=0)


def call_spec(task_id, deps=(), **options):
    return make_spec(task_id, len, options={"depends_on": list(deps), **options})


def test_an_executor_limit_admits_no_more_than_its_slots():
    # Three tasks on a two-slot executor, two on an unlimited one, concurrency 5: the third
    # of the limited ones waits (ready, its timeout not armed) while the others flow around.
    g = graph(*(call_spec(f"p{k}", executor="process", timeout=10) for k in range(3)),
              call_spec("t0"), call_spec("t1"))
    s = Scheduler(g, concurrency=5)
    s.limit_executor("process", 2)
    assert ids(s, s.admit(0)) == ["p0", "p1", "t0", "t1"]
    assert states(s)["p2"] == "ready"
    assert s.next_wake() == 10  # only the two started attempts have deadlines
    s.succeeded(0, 4)
    assert ids(s, s.admit(4)) == ["p2"]
    assert s.next_wake() == 10  # p1's deadline; p2's counts from its start at 4
    assert ids(s, s.expired(10)) == ["p1"]
    assert ids(s, s.expired(14)) == ["p2"]


def test_a_task_waiting_for_an_executor_slot_counts_its_timeout_from_its_start():
    g = graph(*(call_spec(f"p{k}", executor="process", timeout=3) for k in range(3)))
    s = Scheduler(g, concurrency=3)
    s.limit_executor("process", 1)
    assert ids(s, s.admit(0)) == ["p0"]
    s.succeeded(0, 2.5)
    assert ids(s, s.admit(2.5)) == ["p1"]
    assert s.expired(5) == []  # 2.5 s after its start, not 5 s after the run's
    assert ids(s, s.expired(5.5)) == ["p1"]


def test_an_executor_limit_is_set_before_the_first_admit():
    g = graph(call_spec("a", executor="process"))
    s = Scheduler(g, concurrency=2)
    with pytest.raises(ValueError, match="at least one slot"):
        s.limit_executor("process", 0)
    assert ids(s, s.admit(0)) == ["a"]
    with pytest.raises(InvalidTransition, match="after tasks started"):
        s.limit_executor("process", 1)


def test_an_executor_resized_mid_run_admits_by_its_new_slots():
    # Six tasks on an executor without slots, one on another, concurrency 4. Four start; the
    # executor shrinks to 2 (a fleet under backpressure): the four finish, but none of its
    # tasks starts until fewer than two run; it grows again and the rest start.
    g = graph(*(call_spec(f"f{k}", executor="process") for k in range(6)), call_spec("t"))
    s = Scheduler(g, concurrency=4)
    assert ids(s, s.admit(0)) == ["f0", "f1", "f2", "f3"]
    s.resize_executor("process", 2)
    s.succeeded(0, 1)
    assert ids(s, s.admit(1)) == ["t"]  # three still run, over the new two: others flow
    assert s.blocked_reasons()[4] == "lacks slots of executor 'process' (needs 1, -1 free)"
    s.succeeded(1, 2)
    s.succeeded(2, 2)
    assert ids(s, s.admit(2)) == ["f4"]  # one runs (f3): one slot free of two
    s.resize_executor("process", 1)
    s.resize_executor("process", 3)  # back up: f3 and f4 run, one more may start
    assert ids(s, s.admit(3)) == ["f5"]
    for i in (3, 4, 5, 6):
        s.succeeded(i, 4)
    assert not s.is_active()
    assert s.free[-1] == 3  # every slot handed back
    with pytest.raises(ValueError, match="at least one slot"):
        s.resize_executor("process", 0)


def test_resizing_a_limited_executor_moves_its_limit():
    g = graph(*(call_spec(f"p{k}", executor="process") for k in range(4)))
    s = Scheduler(g, concurrency=4)
    s.limit_executor("process", 1)
    assert ids(s, s.admit(0)) == ["p0"]
    s.resize_executor("process", 3)
    assert ids(s, s.admit(0)) == ["p1", "p2"]


def test_blocked_reasons_name_a_full_executor():
    g = graph(call_spec("a", executor="process"), call_spec("b", executor="process"))
    s = Scheduler(g, concurrency=2)
    s.limit_executor("process", 1)
    s.admit(0)
    assert s.blocked_reasons()[1] == "lacks slots of executor 'process' (needs 1, 0 free)"


def test_deferred_timers_start_when_the_executor_says_the_attempt_started():
    from corral.executors.asyncio import AsyncExecutor  # any executor of callables, by name

    g = graph(call_spec("a", executor="remote", timeout=5),
              call_spec("b", executor="remote", heartbeat=2), call_spec("c", timeout=5),
              executors={"remote": AsyncExecutor()})
    s = Scheduler(g, concurrency=3)
    s.defer_timers("remote")
    assert ids(s, s.admit(0)) == ["a", "b", "c"]
    assert s.next_wake() == 5  # only c's timeout: a and b have not really started
    s.started(0, 1, 10)  # a worker took a at 10
    s.started(0, 1, 12)  # a duplicate report changes nothing
    s.started(1, 1, 11)
    assert ids(s, s.expired(14.9)) == ["c"]  # its deadline was 5
    assert ids(s, s.expired(15)) == ["a"]
    assert ids(s, s.hung(13)) == ["b"]
