"""Executors found by name: a run's own, the built-ins, entry points; and executor capacity.

Real threads and worker processes; timeouts are hang guards, never assertions."""

from __future__ import annotations

import time

import pytest

from corral import DAG, Skip, TaskState, ValidationError
from corral.executors import Executor, Work, call
from corral.executors._base import ERROR, OK, SKIP
from corral.executors.process import ProcessExecutor

S = TaskState


class InlineExecutor(Executor):
    """Runs each callable right away, on the run loop: the smallest real executor."""

    name = "inline"

    def __init__(self) -> None:
        super().__init__()
        self.ran: list[str] = []

    def submit(self, work: Work) -> None:
        self.ran.append(work.task_id)
        try:
            value = work.fn(*work.args, **work.kwargs)
        except Skip:
            self.sink(work, SKIP, None)
        except Exception as exc:
            self.sink(work, ERROR, exc)
        else:
            self.sink(work, OK, value)


def double(x: int) -> int:
    return 2 * x


def test_a_user_defined_executor_passed_by_name_runs_the_tasks_that_name_it():
    inline = InlineExecutor()
    dag = DAG()
    a = dag.add(double, 4, id="a", options={"executor": "inline"})
    dag.add(double, a, id="b", options={"executor": "inline"})
    dag.add(double, 1, id="c")  # the default executor still works beside it
    result = dag.run(executors={"inline": inline}, log_dir=None, handle_signals=False)
    assert result.ok
    assert result["b"].value == 16
    assert inline.ran == ["a", "b"]
    assert result["a"].executor == "inline"


def test_an_unknown_executor_is_a_validation_error_naming_the_known_ones():
    dag = DAG()
    dag.add(double, 1, id="a", options={"executor": "inlin"})
    with pytest.raises(ValidationError) as info:
        dag.validate(executors={"inline": InlineExecutor()})
    problem = info.value.problems[0]
    assert problem.message == "task 'a': unknown executor 'inlin'"
    assert problem.hint == "did you mean 'inline'?"
    with pytest.raises(ValidationError) as info:
        dag.validate()  # without the run's executors, only the registry's names
    assert "async, process, shell, thread" in str(info.value.problems[0].hint)


def test_a_command_on_an_executor_of_callables_is_refused():
    dag = DAG()
    dag.shell("a", "true", executor="inline")
    with pytest.raises(ValidationError, match="runs on an executor of commands"):
        dag.validate(executors={"inline": InlineExecutor()})


@pytest.mark.slow
def test_timeouts_count_from_the_start_not_from_a_wait_for_a_worker(tmp_path):
    # Five 2 s tasks with a 3.5 s timeout at concurrency 5 on a pool of two workers. Admitted
    # all at once, the third and later would wait 2-4 s inside the pool with their timeouts
    # running and fail; admitted as workers free up, each has its 3.5 s.
    dag = DAG(concurrency=5)
    for k in range(5):
        dag.add(time.sleep, 2, id=f"t{k}", options={"executor": "process", "timeout": 3.5})
    result = dag.run(executors={"process": ProcessExecutor(max_workers=2)}, log_dir=None,
                     handle_signals=False)
    assert {t: r.state for t, r in result.items()} == dict.fromkeys(result, S.SUCCEEDED), {
        t: r.error_message() for t, r in result.items()}


class OneAtATime(Executor):
    """A queue in front of a single thread, like a remote worker: admitted attempts wait, and
    the executor says when each really starts."""

    reports_start = True

    def __init__(self) -> None:
        super().__init__()
        import queue
        import threading

        self.queue: queue.SimpleQueue[Work] = queue.SimpleQueue()
        threading.Thread(target=self._work, daemon=True).start()

    def submit(self, work: Work) -> None:
        self.queue.put(work)

    def _work(self) -> None:

        while True:
            work = self.queue.get()
            self.started(work)
            self.sink(work, *call(work))


def test_an_executor_that_reports_starts_gets_timeouts_from_the_real_start():
    # Four 0.5 s tasks through one worker with a 1.5 s timeout: the last waits 1.5 s in the
    # queue, which does not count against it.
    dag = DAG(concurrency=4)
    for k in range(4):
        dag.add(time.sleep, 0.5, id=f"t{k}", options={"executor": "one", "timeout": 1.5})
    result = dag.run(executors={"one": OneAtATime()}, log_dir=None, handle_signals=False)
    assert result.ok, {t: r.error_message() for t, r in result.items()}


def test_a_process_workers_own_start_up_does_not_count_against_the_timeout(tmp_path,
                                                                         monkeypatch):
    # Every fresh worker takes 2 s to start (a sitecustomize that sleeps, as a slow disk or a
    # busy machine would); the task itself takes 0.2 s of its 1.5 s timeout.
    (tmp_path / "sitecustomize.py").write_text(
        "import os, time\nif os.environ.get('CORRAL_TEST_SLOW_START'):\n    time.sleep(2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CORRAL_TEST_SLOW_START", "1")
    dag = DAG()
    dag.add(time.sleep, 0.2, id="t", options={"executor": "process", "timeout": 1.5})
    result = dag.run(log_dir=None, handle_signals=False)
    assert result.ok, result["t"].error_message()
