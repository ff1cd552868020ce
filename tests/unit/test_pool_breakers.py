"""The fleet's pool breakers (a breaker per queue) in the scheduler's gate, with a fake clock:
only infrastructure failures count, a broken queue's tasks wait (or fail) while the others
flow, and a probe after the reset closes it. Order and counts only."""

from __future__ import annotations

import pytest

from corral._graph import build_graph
from corral._limits import POOL_BREAKER, Breaker, BreakerState, PoolBreakers, parse_pool_breaker
from corral._options import make_spec
from corral._scheduler import Scheduler
from corral._spec import ShellCommand, TaskState

S = TaskState
WAIT = Breaker(failures=2, window=60.0, reset=10.0, on_open="wait")


def spec(task_id, queue, **options):
    return make_spec(task_id, ShellCommand("true"), options={"queue": queue, **options})


def scheduler(*specs, breaker=WAIT, concurrency=2, breakers=None, fleet=("shell",)):
    graph = build_graph(list(specs), breakers=breakers)
    return Scheduler(graph, concurrency=concurrency, fail_fast=False,
                     pools=PoolBreakers(frozenset(fleet), breaker))


def ids(sched, indices):
    return [sched.graph.ids[i] for i in indices]


def test_crashes_open_a_queues_breaker_its_tasks_wait_and_a_probe_closes_it():
    sched = scheduler(*(spec(f"g{k}", "gpu") for k in range(4)), spec("c", "cpu"))
    gate, index = sched.gate, sched.graph.index
    assert ids(sched, sched.admit(0.0)) == ["g0", "g1"]
    sched.failed(index["g0"], 1.0, infra=True)  # its worker crashed
    sched.failed(index["g1"], 1.0, infra=True)
    assert gate.status["pool:gpu"].state is BreakerState.OPEN
    # the gpu queue's tasks wait, out of the ready queue, holding nothing; cpu's flow
    assert ids(sched, sched.admit(1.0)) == ["c"]
    assert sched.blocked_reasons()[index["g2"]] == "waits for circuit breaker 'pool:gpu'"
    assert sched.next_wake() == 11.0  # the reset
    assert not sched.stalled()
    sched.succeeded(index["c"], 2.0)
    assert sched.admit(5.0) == []
    probe = sched.admit(11.0)
    assert len(probe) == 1  # one probe; the other waits for its outcome
    assert sched.admit(11.5) == []
    sched.failed(probe[0], 12.0)  # the task's own failure: the pool ran it, so it works
    assert gate.status["pool:gpu"].state is BreakerState.CLOSED
    assert len(sched.admit(12.0)) == 1
    assert [(c.breaker, c.state, c.at) for c in gate.changes] == [
        ("pool:gpu", "open", 1.0), ("pool:gpu", "half_open", 11.0),
        ("pool:gpu", "closed", 12.0)]


def test_the_tasks_own_failures_never_open_it():
    sched = scheduler(*(spec(f"g{k}", "gpu") for k in range(4)), concurrency=4)
    for i in sched.admit(0.0):
        sched.failed(i, 1.0)
    assert sched.gate.status["pool:gpu"].state is BreakerState.CLOSED


def test_a_probe_that_crashes_opens_it_again():
    sched = scheduler(*(spec(f"g{k}", "gpu") for k in range(4)))
    for i in sched.admit(0.0):
        sched.failed(i, 1.0, infra=True)
    probe = sched.admit(11.0)
    sched.failed(probe[0], 12.0, infra=True)
    assert sched.gate.status["pool:gpu"].state is BreakerState.OPEN
    assert sched.admit(12.0) == []
    assert sched.next_wake() == 22.0


def test_fail_on_open_refuses_the_queues_tasks_naming_the_pool():
    sched = scheduler(*(spec(f"g{k}", "gpu") for k in range(3)),
                      breaker=Breaker(failures=1, reset=10.0, on_open="fail"))
    gate, index = sched.gate, sched.graph.index
    sched.admit(0.0)
    sched.failed(index["g0"], 1.0, infra=True)
    sched.succeeded(index["g1"], 1.0)
    assert ids(sched, sched.admit(1.0)) == ["g2"]
    assert gate.refused_by[index["g2"]] == "pool:gpu"
    assert gate.refused[index["g2"]].startswith(
        "the workers of queue 'gpu' failed: circuit breaker 'pool:gpu' is open after 1 "
        "infrastructure failure")
    sched.failed(index["g2"], 1.0)
    assert gate.refused_by == {}
    assert sched.state[index["g2"]] is S.FAILED


def test_a_task_with_its_own_breaker_passes_both_and_a_held_one_takes_no_probe():
    sched = scheduler(spec("g0", "gpu"), spec("g1", "gpu"),
                      spec("p", "gpu", breaker="api", depends_on=["g0", "g1"],
                           trigger_rule="all_done"),
                      breakers={"api": {"failures": 1, "reset": 5}})
    gate, index = sched.gate, sched.graph.index
    sched.admit(0.0)
    sched.failed(index["g0"], 1.0, infra=True)
    sched.failed(index["g1"], 1.0, infra=True)
    assert sched.admit(1.0) == []  # held by its pool's breaker
    assert gate.status["api"].state is BreakerState.CLOSED
    assert ids(sched, sched.admit(11.0)) == ["p"]  # the pool's probe
    sched.failed(index["p"], 12.0)  # its own failure: its breaker opens, the pool closes
    assert gate.status["api"].state is BreakerState.OPEN
    assert gate.status["pool:gpu"].state is BreakerState.CLOSED


def test_only_tasks_on_the_fleet_have_a_pool_breaker():
    sched = scheduler(spec("g", "gpu"), fleet=("thread",))
    assert sched.gate is None


@pytest.mark.parametrize(("value", "expected"), [
    (True, POOL_BREAKER), ("on", POOL_BREAKER), (False, None), ("off", None), (None, None),
    ({"failures": 5}, Breaker(5, 60.0, 30.0, 1, "wait")),
    ("failures=2,reset=2m,on_open=fail", Breaker(2, 60.0, 120.0, 1, "fail")),
])
def test_parse_pool_breaker(value, expected):
    assert parse_pool_breaker(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("failures", "KEY=VALUE"), ("failures=0", "failures must be"),
    ("on_open=later", "on_open must be"), ("colour=red", "unknown key 'colour'"), (3, "True"),
])
def test_a_bad_pool_breaker_is_refused(value, message):
    with pytest.raises(ValueError, match=message):
        parse_pool_breaker(value)


def test_queues_set_their_own_pool_breaker_or_none():
    graph = build_graph([spec("g", "gpu"), spec("c", "cpu"), spec("d", None)], queues={
        "gpu": {"strategy": "least_loaded", "breaker": {"failures": 1, "on_open": "fail"}},
        "cpu": {"breaker": False}})
    assert graph.pool_breakers == {"gpu": Breaker(1, 60.0, 30.0, 1, "fail"), "cpu": None}
    pools = PoolBreakers(frozenset({"shell"}), WAIT, graph.pool_breakers)
    sched = Scheduler(graph, concurrency=4, pools=pools)
    assert sched.gate.task_pools == ["pool:gpu", None, "pool:default"]
    assert sched.gate.breakers == {"pool:gpu": Breaker(1, 60.0, 30.0, 1, "fail"),
                                   "pool:default": WAIT}
    # built again (--only), the queues' declarations come along
    again = build_graph(list(graph.specs), queues=graph.queues())
    assert (again.balance, again.pool_breakers) == (graph.balance, graph.pool_breakers)


def test_a_bad_queue_breaker_is_a_problem_before_the_run():
    from corral._errors import ValidationError

    with pytest.raises(ValidationError, match="the pool breaker of queue 'gpu': failures must"):
        build_graph([spec("g", "gpu")], queues={"gpu": {"breaker": {"failures": 0}}})


def test_a_pipeline_file_declares_a_queues_breaker(tmp_path):
    from corral._errors import PipelineError
    from corral._pipeline import load_pipeline

    path = tmp_path / "p.yml"
    path.write_text("queues:\n  gpu: {breaker: {failures: 2, reset: 2m}}\n  cpu: {breaker: false}\n"
                    "tasks:\n  a: {cmd: 'true', queue: gpu}\n")
    graph = load_pipeline(path).dag.validate()
    assert graph.pool_breakers == {"gpu": Breaker(2, 60.0, 120.0, 1, "wait"), "cpu": None}
    path.write_text("queues:\n  gpu: {breaker: {failurs: 2}}\ntasks:\n  a: {cmd: 'true'}\n")
    with pytest.raises(PipelineError, match="failurs"):
        load_pipeline(path)
