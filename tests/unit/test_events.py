"""What listeners are told: every transition carries what a listener needs (a succeeded
task's value, a starting attempt's log file, a failure's error), so that listeners — the run
store, the live display, the service, a JUnit writer — read nothing from the runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corral import DAG, TaskState
from corral.events import RunInfo, Transition
from corral.executors import Executor, Work, call

S = TaskState


class Record:
    def __init__(self) -> None:
        self.info: RunInfo | None = None
        self.events: list[Transition] = []

    def run_started(self, run: RunInfo) -> None:
        self.info = run

    def transitions(self, batch: list[Transition]) -> None:
        self.events.extend(batch)

    def run_finished(self, result: Any) -> None: ...


def three() -> int:
    return 3


def boom() -> None:
    raise ValueError("no")


def test_transitions_carry_values_logs_and_errors(tmp_path):
    dag = DAG()
    a = dag.add(three, id="a")
    dag.add(boom, id="b", options={"depends_on": [a], "retries": 1, "retry_delay": 0})
    watch = Record()
    result = dag.run(listeners=[watch], log_dir=tmp_path, handle_signals=False)
    assert not result.ok
    by = [(t.task, str(t.state), t.attempt) for t in watch.events]
    assert by == [("a", "ready", 0), ("a", "running", 1), ("a", "succeeded", 1),
                  ("b", "ready", 0), ("b", "running", 1), ("b", "retry_wait", 1),
                  ("b", "ready", 1), ("b", "running", 2), ("b", "failed", 2)]
    succeeded = next(t for t in watch.events if t.state is S.SUCCEEDED)
    assert succeeded.value == 3
    runs = [t for t in watch.events if t.state is S.RUNNING]
    run_dir = Path(tmp_path) / result.run_id
    assert [t.log for t in runs] == [str(run_dir / "a.1.log"), str(run_dir / "b.1.log"),
                                     str(run_dir / "b.2.log")]
    failures = [t for t in watch.events if t.state in (S.RETRY_WAIT, S.FAILED)]
    assert [t.error for t in failures] == ["ValueError: no", "ValueError: no"]
    assert all(isinstance(t.exception, ValueError) for t in failures)
    assert all(t.worker is None for t in watch.events)
    assert watch.info is not None
    assert watch.info.reused == ()


def test_without_logs_a_starting_attempt_has_no_log_file():
    dag = DAG()
    dag.add(three, id="a")
    watch = Record()
    dag.run(listeners=[watch], log_dir=None, handle_signals=False)
    assert [t.log for t in watch.events if t.state is S.RUNNING] == [None]


class Remote(Executor):
    """Names the worker that ran each attempt, as a remote executor would."""

    def submit(self, work: Work) -> None:
        work.worker = "worker-7"
        self.sink(work, *call(work))


def test_the_worker_an_executor_names_reaches_the_attempts_end():
    dag = DAG()
    dag.add(three, id="a", options={"executor": "remote"})
    watch = Record()
    dag.run(executors={"remote": Remote()}, listeners=[watch], log_dir=None,
            handle_signals=False)
    assert [(str(t.state), t.worker) for t in watch.events] == [
        ("ready", None), ("running", None), ("succeeded", "worker-7")]
