"""Property tests of the flow-control gate: random DAGs whose tasks share rate limits and
breakers, random outcomes, a simulated driver that wakes when the scheduler says.

Whatever happens: the run ends (a held task is never forgotten), no admission breaks GCRA
(replayed through the pure limiter), a task is refused only while its breaker is open and
only with ``on_open: fail``, half-open never has more probes running than allowed, and
concurrency holds with held tasks taking no slot.
"""

from __future__ import annotations

import math
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral._graph import build_graph
from corral._limits import BreakerState, gcra
from corral._options import make_spec
from corral._scheduler import Scheduler
from corral._spec import ShellCommand, TaskState

S = TaskState
FINAL = {S.SUCCEEDED, S.FAILED, S.SKIPPED, S.UPSTREAM_FAILED, S.CANCELLED}
RATES = {"a": "2/s", "b": {"rate": "1/s", "burst": 3}}


@st.composite
def gated_dags(draw):
    n = draw(st.integers(1, 20))
    breaker = {"failures": draw(st.integers(1, 3)), "window": draw(st.sampled_from([1, 5, 60])),
               "reset": draw(st.sampled_from([0.5, 2])), "half_open": draw(st.integers(1, 2)),
               "on_open": draw(st.sampled_from(["fail", "wait"]))}
    specs = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), max_size=2, unique=True)) if i else []
        options = {
            "depends_on": [f"t{d}" for d in deps],
            "retries": draw(st.integers(0, 1)),
            "retry_delay": 0.5,
            "allow_failure": draw(st.booleans()),
            "trigger_rule": draw(st.sampled_from(["all_success", "all_done"])),
            "rate_limit": draw(st.sampled_from([[], ["a"], ["b"], ["a", "b"]])),
        }
        if draw(st.booleans()):
            options["breaker"] = "x"
        specs.append(make_spec(f"t{i}", ShellCommand("true"), options=options))
    return build_graph(specs, rate_limits=RATES, breakers={"x": breaker})


def simulate(graph, *, concurrency, fail_fast, seed):
    rng = random.Random(seed)
    sched = Scheduler(graph, concurrency=concurrency, fail_fast=fail_fast,
                      rng=random.Random(seed))
    gate = sched.gate
    cfg = graph.breakers["x"]
    now = 0.0
    running: dict[int, float] = {}
    admitted_at: dict[str, list[float]] = {name: [] for name in RATES}
    steps = 0
    while sched.is_active():
        steps += 1
        assert steps < 20_000, "the run did not terminate"
        refusals = True
        while refusals:  # as the run loop does: a refusal is an outcome, then admit again
            refusals = False
            before = gate.status["x"].state if gate is not None else None
            refused = []
            for i in sched.admit(now):  # dispatched first, as the runner does ...
                if gate is not None and i in gate.refused:
                    assert cfg.on_open == "fail"
                    assert BreakerState.OPEN in (before, gate.status["x"].state)
                    refused.append(i)
                    continue
                for name in graph.specs[i].rate_limit:
                    admitted_at[name].append(now)
                running[i] = now + rng.choice([0.1, 0.5, 1, 3])
            for i in refused:  # ... then the refusals come back as failures, unrun
                refusals = True
                for j in sched.failed(i, now):
                    if j in running:
                        running.pop(j)
                        sched.cancelled(j, now)
        assert len(running) == sched.running <= concurrency
        if gate is not None and gate.status["x"].state is BreakerState.HALF_OPEN:
            assert gate.status["x"].probes <= cfg.half_open
        candidates = list(running.values())
        wake = sched.next_wake()
        if wake is not None:
            candidates.append(wake)
        if not candidates:
            assert not sched.is_active() or sched.stopping, sched.blocked_reasons()
            assert sched.ready_count() == 0 or not sched.is_active()
            break
        now = max(now, min(candidates))
        for i, end in sorted(running.items()):
            if end <= now and i in running:
                del running[i]
                outcome = rng.choice(["ok", "fail", "fail", "skip"])
                if outcome == "ok":
                    sched.succeeded(i, now)
                elif outcome == "skip":
                    sched.skipped(i, now)
                else:
                    for j in sched.failed(i, now):
                        running.pop(j)
                        sched.cancelled(j, now)
    return sched, admitted_at


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gated_dags(), st.integers(1, 4), st.booleans(), st.integers(0, 2**32))
def test_gated_runs_end_and_keep_to_their_limits(graph, concurrency, fail_fast, seed):
    sched, admitted_at = simulate(graph, concurrency=concurrency, fail_fast=fail_fast,
                                  seed=seed)
    assert not sched.is_active()
    assert all(s in FINAL for s in sched.state)
    for name, times in admitted_at.items():
        limit = graph.rate_limits[name]
        tat = -math.inf
        for t in times:  # every admission conformed, replayed through the pure limiter
            retry_at, tat = gcra(tat, t, limit)
            assert retry_at is None, (name, t, times)
