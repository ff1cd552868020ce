"""Property tests: random DAGs, random outcomes, random resource sizes, driven by a simulator.

Whatever happens, a task never starts before its dependencies allow it, capacity and
concurrency are never exceeded, an attempt is reported hung exactly when it has been silent for
its heartbeat, every task ends in exactly one final state, and the run ends.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral._graph import build_graph
from corral._options import make_spec
from corral._scheduler import Scheduler
from corral._spec import ShellCommand, TaskState, TriggerRule

S = TaskState
FINAL = {S.SUCCEEDED, S.FAILED, S.SKIPPED, S.UPSTREAM_FAILED, S.CANCELLED}


@st.composite
def dags(draw):
    n = draw(st.integers(1, 25))
    capacity = {"cpu": draw(st.integers(1, 4)), "gpu": draw(st.integers(1, 2))}
    specs = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        resources = {}
        if draw(st.booleans()):
            resources["cpu"] = draw(st.integers(0, capacity["cpu"]))
        if draw(st.integers(0, 3)) == 0:
            resources["gpu"] = draw(st.integers(1, capacity["gpu"]))
        options = {
            "depends_on": [f"t{d}" for d in deps],
            "resources": resources,
            "retries": draw(st.integers(0, 2)),
            "retry_delay": draw(st.sampled_from([0, 0.5, 2])),
            "priority": draw(st.integers(-1, 1)),
            "allow_failure": draw(st.integers(0, 4)) == 0,
            "trigger_rule": draw(st.sampled_from(["all_success", "all_success", "all_done"])),
            "estimate": draw(st.sampled_from([None, 0.1, 1, 5])),
        }
        if draw(st.integers(0, 4)) == 0:
            options["timeout"] = draw(st.sampled_from([0.5, 3]))
        if draw(st.integers(0, 4)) == 0:
            options["heartbeat"] = draw(st.sampled_from([0.3, 2]))
        specs.append(make_spec(f"t{i}", ShellCommand("true"), options=options))
    return build_graph(specs, capacity=capacity)


def simulate(graph, *, concurrency, fail_fast, seed, stop_at=None):
    rng = random.Random(seed)
    sched = Scheduler(graph, concurrency=concurrency, fail_fast=fail_fast,
                      rng=random.Random(seed), record=True)
    cap = {name: graph.capacity[name] for name in sched.resource_names}
    now = 0.0
    running: dict[int, float] = {}  # task -> finish time
    last_beat: dict[int, float] = {}  # task -> its running attempt's last sign of life
    started_after: dict[int, list] = {}
    steps = 0
    while sched.is_active():
        steps += 1
        assert steps < 10_000, "the run did not terminate"
        if stop_at is not None and steps == stop_at:
            for i in sched.stop(now):
                running.pop(i, None)
                sched.cancelled(i, now)
            continue
        for i in sched.admit(now):
            # dependencies allow it: every dependency is final, and for all_success each one
            # satisfied it (succeeded, or failed with allow_failure)
            spec = graph.specs[i]
            for j in graph.deps[i]:
                dep_state = sched.state[j]
                assert dep_state in FINAL, (graph.ids[i], graph.ids[j], dep_state)
                if spec.trigger_rule is TriggerRule.ALL_SUCCESS:
                    assert dep_state is S.SUCCEEDED or (
                        dep_state in (S.FAILED, S.UPSTREAM_FAILED)
                        and graph.specs[j].allow_failure
                    ), (graph.ids[i], graph.ids[j], dep_state)
            # After a failure under fail-fast only cleanup (all_done) starts; after an
            # interrupt, nothing.
            assert not sched.halted
            assert not sched.stopping or spec.trigger_rule is TriggerRule.ALL_DONE
            running[i] = now + rng.choice([0.1, 0.5, 1, 4])
            last_beat[i] = now
            started_after.setdefault(i, []).append(now)
        # capacity and concurrency hold at every step
        assert len(running) == sched.running <= concurrency
        for name, total in cap.items():
            used = sum(graph.specs[i].resources.get(name, 0) for i in running)
            assert used <= total + 1e-9, (name, used, total)
        for name, free in zip(sched.resource_names, sched.free, strict=True):
            assert free >= -1e-9, (name, free)
        # advance time to the next event
        candidates = list(running.values())
        wake = sched.next_wake()
        if wake is not None:
            candidates.append(wake)
        if not candidates:
            assert not sched.is_active() or sched.stopping or sched.ready_count() > 0
            continue
        now = max(now, min(candidates))
        for i in list(running):  # some running attempts show a sign of life
            if rng.random() < 0.3:
                sched.beat(i, sched.attempts[i], now)
                last_beat[i] = now
        for i in sched.expired(now):
            if i not in running:  # cancelled by an earlier timeout's fail-fast stop
                assert sched.state[i] is S.CANCELLED
                continue
            running.pop(i)
            for j in sched.failed(i, now):
                running.pop(j)
                sched.cancelled(j, now)
        for i in sched.hung(now):  # as the run loop does: after the timeouts
            if i not in running:
                assert sched.state[i] is S.CANCELLED
                continue
            # (a sum, not a difference: the scheduler's arithmetic, so floats round alike)
            assert last_beat[i] + graph.specs[i].heartbeat <= now, "hung too early"
            running.pop(i)
            for j in sched.failed(i, now):
                running.pop(j)
                sched.cancelled(j, now)
        for i in running:  # no silent attempt is missed, none is failed too early
            heartbeat = graph.specs[i].heartbeat
            if heartbeat is not None:
                assert last_beat[i] + heartbeat > now, (graph.ids[i], now, last_beat[i])
        for i, end in sorted(running.items()):
            if end <= now and i in running:
                del running[i]
                outcome = rng.choice(["ok", "ok", "ok", "fail", "skip"])
                if outcome == "ok":
                    sched.succeeded(i, now)
                elif outcome == "skip":
                    sched.skipped(i, now)
                else:
                    for j in sched.failed(i, now):
                        running.pop(j)
                        sched.cancelled(j, now)
    return sched, started_after


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(), st.integers(1, 4), st.booleans(), st.integers(0, 2**32))
def test_invariants_hold_on_random_runs(graph, concurrency, fail_fast, seed):
    sched, started = simulate(graph, concurrency=concurrency, fail_fast=fail_fast, seed=seed)
    # every task ends in exactly one final state; attempts never exceed retries + 1
    assert all(s in FINAL for s in sched.state)
    assert sum(sched.counts[s] for s in FINAL) == len(graph)
    assert sum(sched.counts.values()) == len(graph)
    for i, spec in enumerate(graph.specs):
        assert sched.attempts[i] <= spec.retry.retries + 1
        assert len(started.get(i, [])) == sched.attempts[i]
        if sched.state[i] in (S.UPSTREAM_FAILED,):
            assert sched.attempts[i] == 0
    # the transition log tells the same story as the final states
    log = sched.drain_transitions()
    last = {}
    for i, state, _ in log:
        assert last.get(i) not in FINAL, "a task left a final state"
        last[i] = state
    assert all(last[i] == sched.state[i] for i in range(len(graph)))
    # cleanup always runs without an interrupt, fail-fast or not: every all_done task was
    # started, and none was cancelled
    for i, spec in enumerate(graph.specs):
        if spec.trigger_rule is TriggerRule.ALL_DONE:
            assert sched.attempts[i] >= 1, (graph.ids[i], sched.state[i])
            assert sched.state[i] is not S.CANCELLED, graph.ids[i]


@settings(max_examples=150, deadline=None)
@given(dags(), st.integers(1, 4), st.integers(0, 2**32), st.integers(1, 8))
def test_a_stop_at_any_point_ends_the_run_with_nothing_left_running(graph, concurrency, seed, at):
    sched, _ = simulate(graph, concurrency=concurrency, fail_fast=False, seed=seed, stop_at=at)
    assert not sched.is_active()
    assert sched.running == 0
    assert all(s in FINAL for s in sched.state)
