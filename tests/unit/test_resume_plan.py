"""plan_resume is pure: a graph now, a stored run then, a plan. Tables, no store."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from corral import DAG
from corral._spec import TaskState
from corral.store import MISSING, RunRecord, StoredRun, StoredStatus, StoredTask, plan_resume
from corral.store._snapshot import snapshot_of

S = TaskState
OK = S.SUCCEEDED


def one() -> int:
    return 1


def plus(x: int) -> int:
    return x + 1


def plus_changed(x: int) -> int:
    return x + 2


def graph(b_fn=plus):
    """a -> b -> c, and d alone."""
    dag = DAG("p")
    a = dag.add(one, id="a")
    b = dag.add(b_fn, a, id="b")
    dag.add(plus, b, id="c")
    dag.add(one, id="d")
    return dag.validate()


def stored(states: Mapping[str, TaskState | None], *, values: dict[str, Any] | None = None,
           value_errors: dict[str, Any] | None = None) -> StoredRun:
    g = graph()
    snaps = snapshot_of(g)
    values = values if values is not None else {"a": 1, "b": 2, "c": 3, "d": 1}
    tasks = {
        s.id: StoredTask(s.id, s.fingerprint, s.deps, states.get(s.id),
                         1 if states.get(s.id) else 0,
                         values.get(s.id, MISSING) if states.get(s.id) is OK else MISSING,
                         (value_errors or {}).get(s.id))
        for s in snaps
    }
    run = RunRecord(id="r", pipeline="p", status=StoredStatus.CRASHED, tasks=snaps, params={},
                    started_at=datetime.now(UTC), host="h", user="u", pid=1)
    return StoredRun(run, tasks, ())


ALL_OK = {"a": OK, "b": OK, "c": OK, "d": OK}

CASES = [
    ("everything succeeded", graph(), ALL_OK, {}, ["a", "b", "c", "d"], {}),
    ("crash mid-run", graph(), {"a": OK, "b": S.RUNNING, "d": OK}, {}, ["a", "d"],
     {"b": "was running", "c": "never ran"}),
    ("failed and its downstream", graph(), {"a": OK, "b": S.FAILED, "c": S.UPSTREAM_FAILED,
                                            "d": S.CANCELLED}, {}, ["a"],
     {"b": "failed", "c": "upstream failed", "d": "cancelled"}),
    ("definition changed re-runs everything downstream", graph(plus_changed), ALL_OK, {},
     ["a", "d"], {"b": "definition changed", "c": "upstream b re-runs"}),
    ("a lost value re-runs the task and its downstream", graph(), ALL_OK,
     {"value_errors": {"a": "gone"}, "values": {"b": 2, "c": 3, "d": 1}}, ["d"],
     {"a": "value not stored: gone", "b": "upstream a re-runs", "c": "upstream b re-runs"}),
    ("retry wait and skipped", graph(), {"a": OK, "b": S.RETRY_WAIT, "d": S.SKIPPED}, {},
     ["a"], {"b": "failed", "c": "never ran", "d": "skipped"}),
]


@pytest.mark.parametrize(("g", "states", "extra", "reuse", "rerun"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan_resume(g, states, extra, reuse, rerun):
    plan = plan_resume(g, stored(states, **extra))
    assert list(plan.reuse) == reuse
    assert dict(plan.rerun) == rerun
    assert set(plan.reuse) | set(plan.rerun) == set(g.ids)


def test_reused_values_are_the_stored_ones_and_a_new_task_runs():
    dag = DAG("p")
    a = dag.add(one, id="a")
    b = dag.add(plus, a, id="b")
    dag.add(plus, b, id="c")
    dag.add(one, id="d")
    dag.add(one, id="new")
    plan = plan_resume(dag.validate(), stored(ALL_OK, values={"a": 10, "b": 20, "c": 30,
                                                               "d": None}))
    assert plan.reuse == {"a": 10, "b": 20, "c": 30, "d": None}
    assert plan.rerun == {"new": "not in the earlier run"}
    assert "re-run 1" in str(plan)
    assert "new: not in the earlier run" in str(plan)


def test_a_changed_dependency_or_argument_is_a_changed_definition():
    def rewired():  # b now also waits for d
        dag = DAG("p")
        a = dag.add(one, id="a")
        d = dag.add(one, id="d")
        b = dag.add(plus, a, id="b")
        d >> b
        dag.add(plus, b, id="c")
        return dag

    plan = plan_resume(rewired().validate(), stored(ALL_OK))
    assert plan.rerun == {"b": "definition changed", "c": "upstream b re-runs"}

    dag = DAG("p")
    a = dag.add(one, id="a")
    b = dag.add(plus, a, id="b")
    b >> dag.add(plus, 41, id="c")  # an argument instead of b's value
    dag.add(one, id="d")
    assert plan_resume(dag.validate(), stored(ALL_OK)).rerun == {"c": "definition changed"}


def test_the_order_of_dependencies_is_no_change():
    def two_deps(order):
        dag = DAG("p")
        tasks = {t: dag.add(one, id=t) for t in ("a", "d")}
        b = dag.add(one, id="b")
        for t in order:
            tasks[t] >> b
        b >> dag.add(one, id="c")
        return dag.validate()

    then = two_deps(["a", "d"])
    snaps = snapshot_of(then)
    run = RunRecord(id="r", pipeline="p", status=StoredStatus.FAILED, tasks=snaps, params={},
                    started_at=datetime.now(UTC), host="h", user="u", pid=1)
    tasks = {s.id: StoredTask(s.id, s.fingerprint, s.deps, OK, 1, 1) for s in snaps}
    assert plan_resume(two_deps(["d", "a"]), StoredRun(run, tasks, ())).rerun == {}


def test_tasks_sharing_an_action_share_one_fingerprint_and_an_argument_sets_it_apart():
    from corral.store._snapshot import definition_fingerprints

    g = graph()
    fingerprints = dict(zip(g.ids, definition_fingerprints(g.specs), strict=True))
    assert fingerprints["a"] == fingerprints["d"]  # the same function, no arguments
    # b and c pass on different upstream values (arguments naming a and b): apart.
    assert len({fingerprints["a"], fingerprints["b"], fingerprints["c"]}) == 3
    assert all(f.startswith("v2:") for f in fingerprints.values())


def test_a_run_recorded_with_whole_task_fingerprints_resumes_as_before():
    """Runs stored before the v2 fingerprints hold TaskSpec.fingerprint(): compared so."""
    g = graph()
    old = {s.id: s.fingerprint() for s in g.specs}
    snaps = tuple(s._replace(fingerprint=old[s.id]) for s in snapshot_of(g))
    run = RunRecord(id="r", pipeline="p", status=StoredStatus.FAILED, tasks=snaps, params={},
                    started_at=datetime.now(UTC), host="h", user="u", pid=1)
    tasks = {s.id: StoredTask(s.id, s.fingerprint, s.deps, OK, 1, 1) for s in snaps}
    assert plan_resume(g, StoredRun(run, tasks, ())).rerun == {}
    assert plan_resume(graph(plus_changed), StoredRun(run, tasks, ())).rerun == {
        "b": "definition changed", "c": "upstream b re-runs"}
