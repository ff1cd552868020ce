"""Property tests of a run that grows (Scheduler.grow, as for_each and planners drive it):
random DAGs, random outcomes, and at random successes new tasks that depend on the task that
just succeeded, on other tasks, and on each other, with a pending task made to wait for them.
Whatever happens, no task starts before its dependencies allow it, the counts add up, every
task ends in exactly one final state, and the run ends."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral._graph import build_graph, extend_graph
from corral._options import make_spec
from corral._scheduler import Scheduler
from corral._spec import ShellCommand, TaskState

S = TaskState
FINAL = {S.SUCCEEDED, S.FAILED, S.SKIPPED, S.UPSTREAM_FAILED, S.CANCELLED}


def spec(task_id: str, deps: list[str], **options: object) -> object:
    return make_spec(task_id, ShellCommand("true"),
                     options={"depends_on": deps, **options})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 12), seed=st.integers(0, 10_000), fail_fast=st.booleans(),
       concurrency=st.integers(1, 4))
def test_a_growing_run_keeps_the_rules_and_ends(n: int, seed: int, fail_fast: bool,
                                                concurrency: int) -> None:
    rng = random.Random(seed)
    specs = [spec(f"t{i}", [f"t{d}" for d in rng.sample(range(i), min(i, rng.randint(0, 2)))],
                  allow_failure=rng.random() < 0.1, retries=rng.randint(0, 1), retry_delay=0)
             for i in range(n)]
    graph = build_graph(specs)
    sched = Scheduler(graph, concurrency=concurrency, fail_fast=fail_fast, record=True)
    now, running, grown, steps = 0.0, set(), 0, 0
    while sched.is_active():
        steps += 1
        assert steps < 5_000, "the run did not terminate"
        for i in sched.admit(now):
            for j in sched.graph.deps[i]:
                state = sched.state[j]
                assert state in FINAL
                assert state is S.SUCCEEDED or sched.graph.specs[j].allow_failure
            running.add(i)
        assert sched.running == len(running) <= concurrency
        if not running:
            now += 1.0  # a retry's backoff
            continue
        i = rng.choice(sorted(running))
        running.discard(i)
        now += rng.random()
        if rng.random() < 0.2:
            for j in sched.failed(i, now):
                running.discard(j)
                sched.cancelled(j, now)
            continue
        if grown < 5 and rng.random() < 0.5:  # the run grows before i's success is told
            g = sched.graph
            pending = [k for k in range(len(g)) if sched.state[k] is S.PENDING and k != i]
            base = len(g)
            new = []
            for k in range(rng.randint(0, 3)):
                deps = [g.ids[i]] + [f"g{base + m}" for m in range(k) if rng.random() < 0.5]
                others = [g.ids[j] for j in range(len(g)) if rng.random() < 0.1 and j != i]
                new.append(spec(f"g{base + k}", deps + others))
            waiting = {rng.choice(pending): [s.id for s in new]} if pending and new else {}
            try:
                g2 = extend_graph(g, new, waiting)
            except ValueError:  # a waiting task upstream of a new one: a cycle, refused
                g2, waiting = extend_graph(g, new), {}
            sched.grow(g2, {k: [g2.index[t] for t in ids] for k, ids in waiting.items()})
            grown += 1
        sched.succeeded(i, now)
    total = len(sched.graph)
    assert sum(sched.counts[s] for s in FINAL) == total
    assert all(state in FINAL for state in sched.state)
    ended = {}
    for task, state, _ in sched.drain_transitions():
        if state in FINAL:
            assert task not in ended, "a task ended twice"
            ended[task] = state
    assert len(ended) == total
