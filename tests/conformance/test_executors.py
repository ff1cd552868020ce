"""What every executor must do, generated once per executor in ``executors.CASES``.

Each test runs a small DAG on the executor under test (given to the run by name, as a user
would) and checks the outcome the run records. Real threads, processes and subprocesses;
timeouts here are hang guards, never assertions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil
import pytest
from tests.conformance.executors import CASES, ExecutorCase

from corral import DAG, TaskState
from corral._errors import TaskHung, TaskTimeout
from corral._spec import TaskState as State

S = TaskState
GUARD = 60  # seconds: a hang guard only


@pytest.fixture(params=CASES, ids=str)
def case(request: pytest.FixtureRequest) -> ExecutorCase:
    return request.param  # type: ignore[no-any-return]


def add(dag: DAG, case: ExecutorCase, task_id: str, action: tuple[Any, tuple[Any, ...]],
        **options: Any) -> None:
    fn, args = action
    if hasattr(fn, "cmd"):
        dag.shell(task_id, fn.cmd, executor=case.name, **options)
    else:
        dag.add(fn, *args, id=task_id, options={"executor": case.name, **options})


def run(dag: DAG, case: ExecutorCase, tmp_path: Path, **kw: Any) -> Any:
    kw.setdefault("handle_signals", False)
    kw.setdefault("log_dir", tmp_path / "logs")
    return dag.run(executors={case.name: case.make()}, **kw)


def test_success(case, tmp_path):
    dag = DAG()
    add(dag, case, "t", case.actions.ok(21))
    result = run(dag, case, tmp_path)
    assert result["t"].state is S.SUCCEEDED
    assert result["t"].attempts == 1
    assert result["t"].executor == case.name
    if case.actions.values:
        assert result["t"].value == 42


def test_failure_keeps_the_original_error(case, tmp_path):
    dag = DAG()
    add(dag, case, "t", case.actions.boom)
    result = run(dag, case, tmp_path)
    assert result["t"].state is S.FAILED
    assert isinstance(result["t"].error, case.actions.failure)
    assert not result.ok


@pytest.mark.parametrize("case", [c for c in CASES if c.actions.skip is not None], ids=str)
def test_skip(case, tmp_path):
    assert case.actions.skip is not None  # (a command cannot ask to be skipped)
    dag = DAG()
    add(dag, case, "t", case.actions.skip)
    add(dag, case, "after", case.actions.ok(1), depends_on=["t"])
    result = run(dag, case, tmp_path)
    assert result["t"].state is S.SKIPPED
    assert result["after"].state is S.SKIPPED
    assert result.ok


def test_retries_until_success(case, tmp_path):
    dag = DAG()
    add(dag, case, "t", case.actions.flaky(str(tmp_path / "count")), retries=3,
        retry_delay=0.01)
    result = run(dag, case, tmp_path)
    assert result["t"].state is S.SUCCEEDED
    assert result["t"].attempts == 3


def test_retries_exhausted_fail_with_the_last_error(case, tmp_path):
    dag = DAG()
    add(dag, case, "t", case.actions.flaky(str(tmp_path / "count")), retries=1,
        retry_delay=0.01)
    result = run(dag, case, tmp_path)
    assert result["t"].state is S.FAILED
    assert result["t"].attempts == 2


def test_a_timeout_fails_the_attempt_stops_its_work_and_the_run_goes_on(case, tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    marker = tmp_path / "started"
    dag = DAG()
    add(dag, case, "slow", case.actions.slow(str(marker)), timeout=1)
    add(dag, case, "other", case.actions.ok(1))
    result = run(dag, case, tmp_path, fail_fast=False)
    assert result["slow"].state is S.FAILED
    assert isinstance(result["slow"].error, TaskTimeout)
    assert result["other"].state is S.SUCCEEDED
    if case.stops_work:  # nothing it started is left running
        left = [p for p in psutil.Process().children(recursive=True)
                if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
        assert left == []


def test_fail_fast_cancels_a_running_attempt(case, tmp_path):
    marker = tmp_path / "started"
    dag = DAG(concurrency=2)
    add(dag, case, "slow", case.actions.slow(str(marker)))
    # fails only once the slow one runs, so that it has something to cancel
    add(dag, case, "boom", case.actions.boom)
    result = run(dag, case, tmp_path)
    assert result["boom"].state is S.FAILED
    assert result["slow"].state is S.CANCELLED


def test_output_goes_to_the_attempts_log(case, tmp_path):
    dag = DAG()
    add(dag, case, "t", case.actions.loud("hello from the task"))
    result = run(dag, case, tmp_path)
    assert result["t"].state is S.SUCCEEDED
    assert result["t"].log_path is not None
    text = Path(result["t"].log_path).read_text()
    assert "hello from the task\n" in text
    assert "hello from the task on stderr\n" in text


def test_a_silent_attempt_is_hung_and_a_live_one_is_not(case, tmp_path):
    dag = DAG(concurrency=2)
    add(dag, case, "silent", case.actions.silent(30), heartbeat=3)
    beating = case.actions.beating
    add(dag, case, "alive", beating(4) if beating is not None else case.actions.loud("x"),
        heartbeat=3)
    result = run(dag, case, tmp_path, fail_fast=False)
    assert result["silent"].state is S.FAILED
    assert isinstance(result["silent"].error, TaskHung)
    assert result["alive"].state is S.SUCCEEDED, result["alive"].error_message()


def test_many_attempts_all_report_once(case, tmp_path):
    events: list[tuple[str, State]] = []

    class Watch:
        def run_started(self, run: Any) -> None: ...

        def transitions(self, batch: Any) -> None:
            events.extend((t.task, t.state) for t in batch if t.state.is_final)

        def run_finished(self, result: Any) -> None: ...

    dag = DAG(concurrency=8)
    for k in range(60):
        add(dag, case, f"t{k}", case.actions.ok(k))
    result = run(dag, case, tmp_path, listeners=[Watch()], log_dir=None)
    assert result.ok
    assert sorted(events) == sorted((f"t{k}", S.SUCCEEDED) for k in range(60))
    if case.actions.values:
        assert [result[f"t{k}"].value for k in range(60)] == [2 * k for k in range(60)]
