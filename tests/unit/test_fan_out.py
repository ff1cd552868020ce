"""Fan-out over a result (``for_each``): the scheduler's growth by table, and runs through the
Python API (values in order, empty lists, fan-out of a fan-out, failures, resume)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral import DAG, RunStatus, TaskState, ValidationError
from corral._errors import InvalidTransition
from corral._graph import build_graph, extend_graph
from corral._options import make_spec
from corral._scheduler import Scheduler
from corral._spec import ShellCommand

S = TaskState


def spec(task_id: str, deps: tuple[str, ...] = (), **options: Any) -> Any:
    return make_spec(task_id, ShellCommand("true"), options={"depends_on": list(deps), **options})


def states(sched: Scheduler) -> dict[str, str]:
    return {sched.graph.ids[i]: str(s) for i, s in enumerate(sched.state)}


# ---------------------------------------------------------------------------- scheduler
def test_grow_adds_tasks_that_wait_for_a_running_upstream_and_delay_a_pending_one() -> None:
    g = build_graph([spec("u"), spec("m", ("u",)), spec("after", ("m",))])
    s = Scheduler(g, concurrency=4, record=True)
    assert [g.ids[i] for i in s.admit(0)] == ["u"]
    g2 = extend_graph(g, [spec("m[0]", ("u",)), spec("m[1]", ("u",))], {1: ["m[0]", "m[1]"]})
    assert s.grow(g2, {1: [3, 4]}) == [3, 4]
    assert states(s)["m[0]"] == "pending"
    s.succeeded(0, 1)  # u: the instances are ready, m still waits for them
    assert states(s) == {"u": "succeeded", "m": "pending", "after": "pending",
                         "m[0]": "ready", "m[1]": "ready"}
    assert sorted(s.admit(1)) == [3, 4]
    s.succeeded(3, 2)
    assert states(s)["m"] == "pending"
    s.succeeded(4, 2)
    assert states(s)["m"] == "ready"
    assert s.admit(2) == [1]
    s.succeeded(1, 3)
    s.admit(3)
    s.succeeded(2, 4)
    assert not s.is_active()
    assert s.counts[S.SUCCEEDED] == 5
    assert (3, S.READY, 0) in s.drain_transitions()


@pytest.mark.parametrize(("upstream_end", "fate"), [
    ("failed", "upstream_failed"), ("skipped", "skipped"), ("succeeded", "ready")])
def test_a_task_added_after_its_dependency_ended_is_decided_at_once(
        upstream_end: str, fate: str) -> None:
    g = build_graph([spec("a"), spec("b")])
    s = Scheduler(g, concurrency=4, fail_fast=False)
    s.admit(0)
    {"failed": s.failed, "skipped": s.skipped, "succeeded": s.succeeded}[upstream_end](0, 1)
    s.grow(extend_graph(g, [spec("late", ("a",))]))
    assert states(s)["late"] == fate


def test_grow_after_fail_fast_cancels_the_new_tasks_and_refuses_a_started_target() -> None:
    g = build_graph([spec("a"), spec("b")])
    s = Scheduler(g, concurrency=4)
    s.admit(0)
    with pytest.raises(InvalidTransition, match="only a pending task"):
        s.grow(extend_graph(g, [spec("x")], {0: ["x"]}), {0: [2]})
    s.failed(0, 1)
    s.grow(extend_graph(g, [spec("y")]))
    assert states(s)["y"] == "cancelled"


def test_grown_tasks_take_the_executor_slots_and_done_marks_reused_ones() -> None:
    g = build_graph([spec("a")])
    s = Scheduler(g, concurrency=4)
    s.limit_executor("shell", 1)
    g2 = extend_graph(g, [spec("b"), spec("c"), spec("d", ("b",))])
    s.grow(g2, done=[1])
    assert states(s)["b"] == "succeeded"
    assert states(s)["d"] == "ready"
    assert len(s.admit(0)) == 1  # one slot of the shell executor, shared with the new tasks


def test_extend_graph_refuses_id_clashes_unknown_dependencies_and_cycles() -> None:
    g = build_graph([spec("a"), spec("b", ("a",))])
    with pytest.raises(ValidationError, match="duplicate task id 'a'"):
        extend_graph(g, [spec("a")])
    with pytest.raises(ValidationError, match="unknown task 'zz'"):
        extend_graph(g, [spec("c", ("zz",))])
    with pytest.raises(ValidationError, match="cycle: "):
        extend_graph(g, [spec("c", ("b",))], {0: ["c"]})  # a -> ... -> c -> b -> a


# ---------------------------------------------------------------------------- runs
def run(dag: DAG, **kw: Any) -> Any:
    kw.setdefault("handle_signals", False)
    kw.setdefault("log_dir", None)
    return dag.run(**kw)


def test_python_api_fans_out_and_gives_the_list_in_order_downstream() -> None:
    dag = DAG("fan")
    words = dag.add(lambda: ["a", "bb", "ccc"], id="words")
    lengths = dag.add(lambda w, *, twice: len(w) * (2 if twice else 1), id="len",
                      for_each=words, twice=True)
    total = dag.add(lambda xs: xs, lengths, id="total")
    again = dag.add(lambda n: -n, id="neg", options={"for_each": lengths})  # a fan-out's fan-out
    result = run(dag)
    assert result.status is RunStatus.SUCCEEDED
    assert result[total.id].value == [2, 4, 6]
    assert result[again.id].value == [-2, -4, -6]
    assert [result.tasks[f"len[{k}]"].value for k in range(3)] == [2, 4, 6]
    assert result.tasks["neg[2]"].state is S.SUCCEEDED


def test_a_task_function_maps_over_a_list() -> None:
    dag = DAG("map")

    @dag.task
    def numbers() -> list[int]:
        return [3, 4]

    @dag.task(retries=1)
    def power(x: int, exponent: int) -> int:
        return int(x**exponent)

    squares = power.map(numbers(), exponent=2)
    result = run(dag)
    assert result[squares.id].value == [9, 16]
    assert result["power[1]"].value == 16


def test_an_empty_list_fans_out_to_nothing() -> None:
    dag = DAG("empty")
    none = dag.add(list, id="none")
    each = dag.add(lambda x: x, id="each", for_each=none)
    result = run(dag)
    assert result.status is RunStatus.SUCCEEDED
    assert result[each.id].value == []
    assert len(result.tasks) == 2


def test_a_failed_instance_fails_the_mapped_task_and_its_dependents() -> None:
    dag = DAG("fails")
    nums = dag.add(lambda: [1, 0, 2], id="nums")
    inv = dag.add(lambda x: 1 / x, id="inv", for_each=nums)
    dag.add(lambda xs: xs, inv, id="after")
    result = run(dag, fail_fast=False)
    assert result.status is RunStatus.FAILED
    assert result.tasks["inv[1]"].state is S.FAILED
    assert isinstance(result.tasks["inv[1]"].error, ZeroDivisionError)
    assert result.tasks["inv[0]"].state is S.SUCCEEDED
    assert result.tasks["inv"].state is S.UPSTREAM_FAILED
    assert result.tasks["after"].state is S.UPSTREAM_FAILED


def test_for_each_over_an_unknown_task_suggests_the_near_one() -> None:
    dag = DAG("bad")
    dag.add(lambda: [1], id="items")
    dag.add(lambda x: x, id="each", options={"for_each": "itemz"})
    with pytest.raises(ValidationError, match=r"for_each over unknown task 'itemz'") as info:
        dag.validate()
    assert "did you mean 'items'?" in str(info.value)


def test_resume_reuses_the_instances_that_succeeded(tmp_path: Path) -> None:
    calls: list[int] = []
    broken = {2}

    def work(x: int) -> int:
        calls.append(x)
        if x in broken:
            raise RuntimeError("not today")
        return x * 10

    dag = DAG("again")
    items = dag.add(lambda: [1, 2, 3], id="items")
    dag.add(work, id="each", for_each=items)
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    first = run(dag, store=store, fail_fast=False)
    assert first.status is RunStatus.FAILED
    broken.clear()
    calls.clear()
    second = run(dag, store=store, resume=first.run_id)
    assert second.status is RunStatus.SUCCEEDED
    assert calls == [2]  # only the instance that failed ran again
    assert second["each"].value == [10, 20, 30]
    assert second.tasks["each[0]"].attempts == 0


def test_instances_pass_their_breaker_and_the_gather_does_not() -> None:
    dag = DAG("gated", circuit_breakers={"svc": {"failures": 1, "reset": 3600}})
    items = dag.add(lambda: [0, 1, 2], id="items")

    def call(x: int) -> int:
        raise RuntimeError(f"service down for {x}")

    dag.add(call, id="call", for_each=items, options={"breaker": "svc"})
    result = run(dag, fail_fast=False, concurrency=1)
    errors = [type(result[f"call[{k}]"].error).__name__ for k in range(3)]
    assert errors == ["RuntimeError", "CircuitOpen", "CircuitOpen"]
    assert result["call"].state is S.UPSTREAM_FAILED
    assert [(c.breaker, str(c.state)) for c in result.breakers] == [("svc", "open")]
