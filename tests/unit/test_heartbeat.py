"""The heartbeat option: an attempt silent for longer than its heartbeat fails as hung.

First the scheduler with a fake clock (no threads, no sleeps), then the real engine with every
executor. Waits are generous (a heartbeat of 0.5 s against tasks that would otherwise run for
a minute); the time limits here are hang guards, never assertions."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest
from tests.helpers.waiting import wait_for

import corral
from corral import DAG, RunStatus, TaskState, ValidationError
from corral._errors import TaskHung, TaskTimeout
from corral._graph import build_graph
from corral._options import make_spec
from corral._scheduler import Scheduler
from corral._spec import ShellCommand

S = TaskState
GUARD = 60  # seconds: what "forever" means in a test, and a hang guard only
HEARTBEAT = 0.5


def spec(task_id, deps=(), **options):
    return make_spec(task_id, ShellCommand("true"), options={"depends_on": list(deps), **options})


def graph(*specs):
    return build_graph(list(specs))


def states(sched):
    return {sched.graph.ids[i]: str(s) for i, s in enumerate(sched.state)}


# --------------------------------------------------------------------- the scheduler


def test_a_silent_attempt_is_hung_when_its_heartbeat_has_passed():
    s = Scheduler(graph(spec("a", heartbeat=5)), concurrency=1)
    assert s.admit(0) == [0]
    assert s.next_wake() == 5
    assert s.hung(4.9) == []
    assert s.expired(5) == []  # hung is not a timeout
    assert s.hung(5) == [0]
    assert states(s) == {"a": "running"}  # the driver reports it, as for a timeout
    assert s.failed(0, 5) == []
    assert states(s) == {"a": "failed"}
    assert s.next_wake() is None


def test_beats_push_the_deadline_without_touching_the_heap_until_it_comes_due():
    s = Scheduler(graph(spec("a", heartbeat=5)), concurrency=1)
    s.admit(0)
    s.beat(0, 1, 3)
    s.beat(0, 1, 4)
    assert s.next_wake() == 5  # the loop wakes at the old deadline ...
    assert s.hung(5) == []  # ... and finds the attempt alive: the deadline moves
    assert s.next_wake() == 9
    s.beat(0, 1, 8.5)
    assert s.hung(9) == []
    assert s.next_wake() == 13.5
    assert s.hung(13.4) == []
    assert s.hung(13.5) == [0]


def test_beats_out_of_order_never_move_the_last_beat_back():
    s = Scheduler(graph(spec("a", heartbeat=5)), concurrency=1)
    s.admit(0)
    s.beat(0, 1, 4)
    s.beat(0, 1, 2)  # a slower thread's beat, arriving late
    assert s.last_beat[0] == 4
    assert s.hung(5) == []
    assert s.hung(9) == [0]


def test_a_beat_of_an_old_attempt_or_of_a_task_not_running_is_ignored():
    s = Scheduler(graph(spec("a", heartbeat=5, retries=1, retry_delay=2, retry_jitter=0)),
                  concurrency=1)
    s.admit(0)
    assert s.hung(5) == [0]
    s.failed(0, 5)
    assert states(s) == {"a": "retry_wait"}
    s.beat(0, 1, 6)  # attempt 1 is over; the task is waiting to retry
    assert s.next_wake() == 7  # the retry, not attempt 1's stale deadline
    assert s.admit(7) == [0]
    assert s.attempts[0] == 2
    assert s.last_beat[0] == 7  # starting is a sign of life
    s.beat(0, 1, 11)  # attempt 1 again, from a thread that was abandoned
    assert s.hung(12) == [0]
    s.failed(0, 12)
    assert states(s) == {"a": "failed"}
    assert s.attempts[0] == 2


def test_deadlines_of_ended_attempts_never_wake_the_loop():
    s = Scheduler(graph(spec("a", heartbeat=5, timeout=10), spec("b", ["a"], retries=1)),
                  concurrency=1)
    s.admit(0)
    s.succeeded(0, 1)
    assert s.next_wake() is None
    assert s.hung(100) == []
    assert s.expired(100) == []
    assert states(s) == {"a": "succeeded", "b": "ready"}


def test_tasks_without_a_heartbeat_have_no_silence_deadline():
    s = Scheduler(graph(spec("a"), spec("b", timeout=3)), concurrency=2)
    s.admit(0)
    s.beat(0, 1, 1)  # harmless
    assert s.next_wake() == 3
    assert s.hung(1000) == []


def test_whichever_of_timeout_and_heartbeat_comes_first_ends_the_attempt():
    s = Scheduler(graph(spec("quiet", heartbeat=2, timeout=10),
                        spec("chatty", heartbeat=2, timeout=3)), concurrency=2)
    assert sorted(s.admit(0)) == [0, 1]
    s.beat(1, 1, 1.5)
    assert s.next_wake() == 2
    assert s.hung(2) == [0]  # silent: hung long before its timeout
    assert s.expired(2) == []
    s.failed(0, 2)
    s.beat(1, 1, 2.9)
    assert s.next_wake() == 3  # quiet's timeout deadline is stale: chatty's comes first
    assert s.hung(3) == []  # chatty is alive ...
    assert s.expired(3) == [1]  # ... but out of time
    s.failed(1, 3)
    assert states(s) == {"quiet": "failed", "chatty": "failed"}
    assert s.next_wake() is None  # chatty's silence deadline at 4.9 is stale


def test_a_hung_attempt_is_retried_and_fail_fast_stops_the_others():
    s = Scheduler(graph(spec("flaky", heartbeat=1, retries=1, retry_delay=0),
                        spec("long"), spec("later", ["flaky"])), concurrency=2)
    assert sorted(states(s).items()) == [("flaky", "ready"), ("later", "pending"),
                                         ("long", "ready")]
    s.admit(0)
    assert s.hung(1) == [0]
    assert s.failed(0, 1) == []  # a retry remains
    assert s.admit(1) == [0]  # attempt 2
    assert s.hung(1.5) == []
    assert s.hung(2) == [0]
    running = s.failed(0, 2)  # the last attempt: fail-fast stops the run
    assert [s.graph.ids[i] for i in running] == ["long"]
    s.cancelled(running[0], 2)
    assert states(s) == {"flaky": "failed", "long": "cancelled", "later": "upstream_failed"}
    assert s.attempts[0] == 2
    assert not s.is_active()


# --------------------------------------------------------------------- the engine


def run(dag, **kw):
    kw.setdefault("handle_signals", False)
    kw.setdefault("log_dir", None)
    return dag.run(**kw)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def assert_hung(task, *, attempt=1):
    assert task.state is S.FAILED
    assert isinstance(task.error, TaskHung), task.error_message()
    assert not isinstance(task.error, TaskTimeout)
    message = task.error_message()
    assert message.startswith(f"TaskHung: task {task.id!r} showed no sign of life for ")
    assert message.endswith(f"(heartbeat {HEARTBEAT:g}s, attempt {attempt})")


def test_a_silent_shell_task_is_hung_and_its_process_group_is_killed(tmp_path):
    pids = tmp_path / "pids"
    # a background child and the shell itself; the pids go to a file, not to the output
    cmd = f"sleep {GUARD} & echo $! > {pids}; echo $$ >> {pids}; wait"
    dag = DAG()
    dag.shell("silent", cmd, heartbeat=HEARTBEAT)
    result = run(dag, log_dir=tmp_path / "logs")
    assert_hung(result["silent"])
    assert result.status is RunStatus.FAILED
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 2
    wait_for(lambda: not any(_alive(p) for p in children), "the hung command's processes")


@pytest.mark.parametrize("logs", [True, False], ids=["logs", "no-logs"])
def test_a_shell_task_whose_output_keeps_coming_is_alive(tmp_path, logs):
    dag = DAG()
    # 1.5 s in all, never silent for more than 0.1 s
    dag.shell("ticking", "for i in $(seq 15); do echo tick $i; sleep 0.1; done",
              heartbeat=HEARTBEAT)
    result = run(dag, log_dir=tmp_path if logs else None)
    assert result.ok, result["ticking"].error_message()
    if logs:
        lines = Path(result["ticking"].log_path).read_text().splitlines()
        assert lines == [f"tick {i}" for i in range(1, 16)]


def test_a_shell_task_that_beats_but_outruns_its_timeout_times_out(tmp_path):
    dag = DAG()
    dag.shell("chatty", f"while true; do echo .; sleep 0.05; done; sleep {GUARD}",
              heartbeat=HEARTBEAT, timeout=1)
    result = run(dag, log_dir=tmp_path)
    assert isinstance(result["chatty"].error, TaskTimeout)


def test_a_hung_attempt_is_retried(tmp_path):
    dag = DAG()
    dag.shell("stuck", f"sleep {GUARD}", heartbeat=HEARTBEAT, retries=1, retry_delay=0)
    result = run(dag, log_dir=tmp_path)
    assert_hung(result["stuck"], attempt=2)
    assert result["stuck"].attempts == 2


def _beating(seconds):
    end = time.monotonic() + seconds
    beats = 0
    while time.monotonic() < end:
        corral.heartbeat()
        beats += 1
        time.sleep(0.1)
    return beats


def _printing(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        print("working")
        time.sleep(0.1)
    return "done"


def _warm():
    return os.getpid()


def warm_worker_first(dag, executor):
    """Dependencies and run arguments that make a process task run on a worker that has
    already started (and imported this module): the start of a fresh interpreter counts
    against a heartbeat, and a loaded machine may take longer than these tests' 0.5 s."""
    if executor != "process":
        return [], {}
    from corral.executors.process import ProcessExecutor

    warm = dag.add(_warm, id="warm", options={"executor": "process"})
    return [warm], {"executors": {"process": ProcessExecutor(max_workers=1)}}


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_task_calling_heartbeat_is_alive(tmp_path, executor):
    dag = DAG()
    deps, kw = warm_worker_first(dag, executor)
    dag.add(_beating, 1.5, id="busy",
            options={"executor": executor, "heartbeat": HEARTBEAT, "depends_on": deps})
    result = run(dag, log_dir=tmp_path, **kw)
    assert result.ok, result["busy"].error_message()
    assert result["busy"].value >= 10


@pytest.mark.parametrize("executor", ["thread", "process"])
@pytest.mark.parametrize("logs", [True, False], ids=["logs", "no-logs"])
def test_a_task_whose_output_keeps_coming_is_alive(tmp_path, executor, logs, capfd):
    dag = DAG()
    deps, kw = warm_worker_first(dag, executor)
    dag.add(_printing, 1.5, id="chatty",
            options={"executor": executor, "heartbeat": HEARTBEAT, "depends_on": deps})
    result = run(dag, log_dir=tmp_path if logs else None, **kw)
    assert result.ok, result["chatty"].error_message()
    out, err = capfd.readouterr()
    if logs:
        assert Path(result["chatty"].log_path).read_text().count("working") >= 10
        assert "working" not in out + err
    else:  # without logs, the output still goes where it would have gone
        assert (out + err).count("working") >= 10


async def _heartbeat_async(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        corral.heartbeat()
        await asyncio.sleep(0.1)
    return "done"


def test_an_async_task_calling_heartbeat_is_alive():
    dag = DAG()
    dag.add(_heartbeat_async, 1.5, id="busy", options={"heartbeat": HEARTBEAT})
    result = run(dag)
    assert result.ok, result["busy"].error_message()


def test_an_async_task_that_awaits_forever_is_hung_and_cancelled():
    cancelled = []

    async def forever():
        try:
            await asyncio.sleep(GUARD)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    dag = DAG()
    dag.add(forever, id="forever", options={"heartbeat": HEARTBEAT})
    dag.add(lambda: 1, id="fine")
    result = run(dag, fail_fast=False)
    assert_hung(result["forever"])
    assert result["fine"].ok
    assert cancelled == [True]


def test_a_silent_thread_task_is_hung_and_abandoned():
    release = threading.Event()

    def stuck():
        release.wait(GUARD)

    dag = DAG()
    dag.add(stuck, id="stuck", options={"heartbeat": HEARTBEAT})
    try:
        result = run(dag)
    finally:
        release.set()
    assert_hung(result["stuck"])


def _pid_then_sleep(path):
    Path(path).write_text(str(os.getpid()))
    time.sleep(GUARD)


def _noop():
    return None


def test_a_silent_process_task_is_hung_and_its_worker_killed(tmp_path):
    from corral.executors.process import ProcessExecutor

    pid_file = tmp_path / "pid"
    dag = DAG()
    # A first task starts the one worker: a fresh interpreter's start counts as silence, and
    # on a loaded machine it alone can outlast the heartbeat.
    warm = dag.add(_noop, id="warm", options={"executor": "process"})
    dag.add(_pid_then_sleep, str(pid_file), id="stuck",
            options={"executor": "process", "heartbeat": HEARTBEAT, "depends_on": [warm]})
    result = run(dag, executors={"process": ProcessExecutor(max_workers=1)})
    assert_hung(result["stuck"])
    pid = int(pid_file.read_text())
    wait_for(lambda: not _alive(pid), "the hung task's worker to die")


def test_events_carry_the_hung_error(tmp_path):
    class Recorder:
        def __init__(self):
            self.events = []

        def run_started(self, run):
            pass

        def transitions(self, batch):
            self.events.extend(batch)

        def run_finished(self, result):
            pass

    rec = Recorder()
    dag = DAG()
    dag.shell("silent", f"sleep {GUARD}", heartbeat=HEARTBEAT)
    run(dag, listeners=[rec], log_dir=tmp_path)
    (failed,) = [e for e in rec.events if e.state is S.FAILED]
    assert failed.error.startswith("TaskHung: task 'silent' showed no sign of life for ")
    assert isinstance(failed.exception, TaskHung)


def test_heartbeat_outside_a_task_does_nothing():
    corral.heartbeat()  # no task, no error


def test_a_task_without_a_heartbeat_may_call_heartbeat():
    def plain():
        corral.heartbeat()
        return 1

    dag = DAG()
    dag.add(plain, id="plain")
    assert run(dag)["plain"].value == 1


# --------------------------------------------------------------------- the option


@pytest.mark.parametrize("value", [0, -1, "abc", True])
def test_a_bad_heartbeat_is_a_validation_error(value):
    dag = DAG()
    dag.shell("t", "true", heartbeat=value)
    with pytest.raises(ValidationError) as info:
        dag.validate()
    (problem,) = info.value.problems
    assert problem.message == f"task 't': heartbeat must be a number of seconds > 0, not {value!r}"


def test_heartbeat_is_a_python_option_in_seconds_or_a_timedelta():
    from datetime import timedelta

    dag = DAG()

    @dag.task(heartbeat=30)
    def a():
        pass

    a()
    dag.shell("b", "true", heartbeat=timedelta(minutes=1))
    graph = dag.validate()
    assert [s.heartbeat for s in graph.specs] == [30, 60.0]
