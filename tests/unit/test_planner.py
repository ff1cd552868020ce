"""Planner tasks through the Python API: a task returns a corral.Plan, its tasks join the run
as its children, its dependents wait for the whole plan and receive {id: value}, a resume
neither asks the planner again nor re-runs finished children, and bad plans fail the planner
with a clear PlanError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import corral
from corral import DAG, RunStatus, TaskState
from corral.errors import PlanError

S = TaskState
CALLS: list[str] = []
BROKEN: set[str] = set()


def run(dag: DAG, **kw: Any) -> Any:
    kw.setdefault("handle_signals", False)
    kw.setdefault("log_dir", None)
    return dag.run(**kw)


def step(name: str, *inputs: Any) -> str:
    CALLS.append(name)
    if name in BROKEN:
        raise RuntimeError(f"{name} is broken")
    return f"{name}({', '.join(map(str, inputs))})"


def planner(topic: str) -> corral.Plan:
    CALLS.append("planner")
    plan = corral.Plan()
    first = plan.add(step, "search", topic, id="search")
    plan.add(step, "summarise", first, id="summarise", options={"retries": 0})
    plan.shell("note", "true", depends_on=["summarise"])
    return plan


def make_dag() -> DAG:
    dag = DAG("agents")
    p = dag.add(planner, "cats", id="plan")
    dag.add(lambda results: results, p, id="report")
    return dag


@pytest.fixture(autouse=True)
def _clean() -> None:
    CALLS.clear()
    BROKEN.clear()
    return


def test_a_plan_joins_the_run_and_its_dependents_get_the_results() -> None:
    result = run(make_dag())
    assert result.status is RunStatus.SUCCEEDED
    assert CALLS == ["planner", "search", "summarise"]
    assert result["report"].value == {
        "search": "search(cats)", "summarise": "summarise(search(cats))", "note": None}
    assert list(result.tasks) == ["plan", "report", "search", "summarise", "note"]
    assert result["plan"].value["tasks"][0]["id"] == "search"  # the plan, as data


def test_a_resume_reuses_the_plan_and_the_children_that_succeeded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    BROKEN.add("summarise")
    first = run(make_dag(), store=url)
    assert first.status is RunStatus.FAILED
    assert first["report"].state is S.UPSTREAM_FAILED  # it waited for the whole plan
    BROKEN.clear()
    CALLS.clear()
    second = run(make_dag(), store=url, resume=first.run_id)
    assert second.status is RunStatus.SUCCEEDED
    assert CALLS == ["summarise"]  # not the planner again, not search
    assert second["search"].attempts == 0
    assert second["report"].value["summarise"] == "summarise(search(cats))"


def clashing_planner() -> corral.Plan:
    plan = corral.Plan()
    plan.add(step, "x", id="report")  # the run has a task 'report' already
    return plan


def cyclic_planner() -> corral.Plan:
    plan = corral.Plan()
    plan.add(step, "a", id="a", options={"depends_on": ["b"]})
    plan.add(step, "b", id="b", options={"depends_on": ["a"]})
    return plan


def unknown_planner() -> corral.Plan:
    plan = corral.Plan()
    plan.add(step, "a", id="a", options={"depends_on": ["serch"]})
    return plan


def lambda_planner() -> corral.Plan:
    plan = corral.Plan()
    plan.add(lambda: 1, id="a")
    return plan


@pytest.mark.parametrize(("fn", "message"), [
    (clashing_planner, "duplicate task id 'report'"),
    (cyclic_planner, "cycle: "),
    (unknown_planner, "depends on unknown task 'serch'"),
    (lambda_planner, "must call a module-level function"),
])
def test_a_plan_that_cannot_join_fails_the_planner_clearly(fn: Any, message: str) -> None:
    dag = DAG("bad")
    p = dag.add(fn, id="plan", options={"retries": 2})
    dag.add(lambda r: r, p, id="report")
    result = run(dag)
    assert result.status is RunStatus.FAILED
    error = result["plan"].error
    assert isinstance(error, PlanError)
    assert message in str(error)
    assert result["plan"].attempts == 1  # not retried
    assert result["report"].state is S.UPSTREAM_FAILED


def square(x: int) -> int:
    return x * x


def process_planner() -> corral.Plan:
    plan = corral.Plan()
    for k in range(3):
        plan.add(square, k, id=f"sq-{k}", options={"executor": "process"})
    return plan


def test_a_plan_may_need_an_executor_the_run_has_not_started() -> None:
    dag = DAG("late")
    p = dag.add(process_planner, id="plan")
    report = dag.add(lambda r: r, p, id="report")
    # wider than the process pool: the late pool's slots bound its tasks
    result = run(dag, concurrency=16)
    assert result.status is RunStatus.SUCCEEDED, {t: r.error for t, r in result.tasks.items()}
    assert result[report.id].value == {"sq-0": 0, "sq-1": 1, "sq-2": 4}
    assert result["sq-2"].executor == "process"


def quiet(seconds: float) -> None:
    import time

    time.sleep(seconds)


def hanging_planner() -> corral.Plan:
    plan = corral.Plan()
    plan.add(quiet, 30, id="quiet", options={"heartbeat": 0.2})
    return plan


def test_a_planned_task_with_a_heartbeat_is_watched() -> None:
    # No task of the run had a heartbeat before the plan came: the planned one is still
    # failed as hung, not left to sleep (the 30 s sleep is the hang guard's to catch).
    dag = DAG("watched")
    dag.add(hanging_planner, id="plan")
    result = run(dag)
    assert result.status is RunStatus.FAILED
    assert type(result["quiet"].error).__name__ == "TaskHung"

