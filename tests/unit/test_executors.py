"""Each built-in executor's own promises beyond the conformance suite (tests/conformance):
crash isolation, process-group kills, abandoned threads, log routing. Real threads, processes
and subprocesses throughout; timeouts here are hang guards, never assertions."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from corral import DAG, TaskState
from corral._errors import CommandFailed, TaskTimeout, WorkerCrashed

S = TaskState
GUARD = 60  # seconds: a hang guard only


def run(dag, **kw):
    kw.setdefault("handle_signals", False)
    return dag.run(**kw)


def _ok(x):
    return x * 2


# --------------------------------------------------------------------- process executor


def _crash():
    os._exit(7)


def _kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def _pid():
    return os.getpid()


def _boom():
    raise KeyError("boom")


def test_a_process_tasks_error_carries_the_workers_traceback(tmp_path):
    dag = DAG()
    dag.add(_boom, id="t", options={"executor": "process"})
    result = run(dag, log_dir=tmp_path)
    assert isinstance(result["t"].error, KeyError)
    assert "_boom" in str(result["t"].error.__cause__)  # the worker's traceback


def test_a_crashed_worker_fails_only_its_task(tmp_path):
    dag = DAG()
    dag.add(_crash, id="crash", options={"executor": "process"})
    dag.add(_kill_self, id="killed", options={"executor": "process"})
    for i in range(4):
        dag.add(_ok, i, id=f"fine{i}", options={"executor": "process"})
    result = run(dag, log_dir=tmp_path, fail_fast=False, concurrency=2)
    assert isinstance(result["crash"].error, WorkerCrashed)
    assert "exit code 7" in str(result["crash"].error)
    assert "signal 9" in str(result["killed"].error)
    assert [result[f"fine{i}"].value for i in range(4)] == [0, 2, 4, 6]


def test_closures_and_lambdas_travel_by_value(tmp_path):
    factor = 7

    def scaled(x):
        return x * factor

    dag = DAG()
    a = dag.add(scaled, 6, id="closure", options={"executor": "process"})
    dag.add(lambda v: v + 1, a, id="lambda", options={"executor": "process"})
    result = run(dag, log_dir=tmp_path)
    assert result["closure"].value == 42
    assert result["lambda"].value == 43


def test_process_tasks_run_in_other_processes_and_log_their_output(tmp_path):
    def shout():
        print("hello from the worker")
        return os.getpid()

    dag = DAG()
    dag.add(shout, id="t", options={"executor": "process"})
    result = run(dag, log_dir=tmp_path)
    assert result["t"].value != os.getpid()
    assert "hello from the worker" in Path(result["t"].log_path).read_text()


def test_an_unpicklable_result_is_a_clear_task_failure(tmp_path):
    def gen():
        return (i for i in range(3))

    dag = DAG()
    dag.add(gen, id="t", options={"executor": "process"})
    result = run(dag, log_dir=tmp_path)
    assert result["t"].state is S.FAILED
    assert "could not be pickled" in str(result["t"].error)


def test_main_module_is_not_re_executed_in_workers(tmp_path):
    script = tmp_path / "script.py"
    marker = tmp_path / "imports"
    script.write_text(f"""
import corral
with open({str(marker)!r}, "a") as f:
    f.write("x")

def work(n):
    return n + 1

dag = corral.DAG()
dag.add(work, 1, id="w", options={{"executor": "process"}})
r = dag.run(log_dir={str(tmp_path)!r})
assert r["w"].value == 2, r["w"]
""")
    import subprocess

    subprocess.run([sys.executable, str(script)], check=True, timeout=GUARD, cwd=tmp_path)
    assert marker.read_text() == "x"


# --------------------------------------------------------------------- shell executor


def test_shell_output_goes_to_the_log_and_failures_carry_the_tail(tmp_path):
    dag = DAG()
    dag.shell("ok", "echo out; echo err >&2")
    dag.shell("bad", "echo about to fail; exit 3")
    result = run(dag, log_dir=tmp_path, fail_fast=False)
    assert Path(result["ok"].log_path).read_text() == "out\nerr\n"
    err = result["bad"].error
    assert isinstance(err, CommandFailed)
    assert err.exit_code == 3
    assert "about to fail" in err.tail


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_shell_timeout_kills_the_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    # a background grandchild and a foreground child, both sleeping
    cmd = f"sleep 300 & echo $! >> {pids}; sh -c 'echo $$ >> {pids}; sleep 300'"
    dag = DAG()
    dag.shell("slow", cmd, timeout=1)
    result = run(dag, log_dir=tmp_path)
    assert isinstance(result["slow"].error, TaskTimeout)
    deadline = time.monotonic() + GUARD
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 2
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in children)


def test_shell_env_cwd_and_a_missing_cwd(tmp_path):
    (tmp_path / "sub").mkdir()
    dag = DAG(env={"GLOBAL": "g"})
    dag.shell("t", 'echo "$GLOBAL $LOCAL $(basename "$PWD")"', env={"LOCAL": "l"},
              cwd=str(tmp_path / "sub"))
    dag.shell("nowhere", "true", cwd=str(tmp_path / "missing"))
    result = run(dag, log_dir=tmp_path / "logs", fail_fast=False)
    assert Path(result["t"].log_path).read_text() == "g l sub\n"
    assert result["nowhere"].state is S.FAILED
    assert isinstance(result["nowhere"].error, FileNotFoundError)


# --------------------------------------------------------------------- thread executor


def test_a_timed_out_thread_is_abandoned_and_the_pool_keeps_its_width(tmp_path):
    import threading

    release = threading.Event()

    def stuck():
        release.wait(GUARD)

    dag = DAG()
    dag.add(stuck, id="stuck", options={"timeout": 0.2})
    for i in range(4):
        dag.add(_ok, i, id=f"after{i}")
    try:
        result = run(dag, log_dir=tmp_path, concurrency=1, fail_fast=False)
    finally:
        release.set()
    assert isinstance(result["stuck"].error, TaskTimeout)
    assert all(result[f"after{i}"].ok for i in range(4))


# --------------------------------------------------------------------- output of Python tasks


def test_print_of_thread_and_async_tasks_goes_to_each_attempts_log(tmp_path, capsys):
    import threading

    both_running = threading.Barrier(2, timeout=GUARD)

    def loud(name):
        both_running.wait()  # the two threads print at the same time
        for k in range(50):
            print(f"{name} line {k}")
        print(f"{name} complains", file=sys.stderr)
        return name

    async def aloud():
        print("async before await")
        await asyncio.sleep(0)
        print("async after await")

    dag = DAG()
    dag.add(loud, "one", id="one")
    dag.add(loud, "two", id="two")
    dag.add(aloud, id="aloud")
    dag.add(lambda: None, id="quiet")
    result = run(dag, log_dir=tmp_path, concurrency=4)
    assert result.ok
    for name in ("one", "two"):
        text = Path(result[name].log_path).read_text()
        assert text.splitlines() == [f"{name} line {k}" for k in range(50)] + [
            f"{name} complains"]
    assert Path(result["aloud"].log_path).read_text() == "async before await\nasync after await\n"
    assert result["quiet"].log_path is None  # printed nothing: no file
    out, err = capsys.readouterr()
    assert "line" not in out
    assert "await" not in out
    assert "complains" not in err
    assert type(sys.stdout).__name__ != "_Router"  # restored after the run


# --------------------------------------------------------------------- shell executor, both loops
# `corral serve` runs its runs on uvloop (uvicorn[standard]); `corral run` on asyncio. The shell
# executor only reads a socket and pipes on the loop, so both must behave the same.

def run_on(loop_name, dag, **kw):
    async def go():
        return await dag.run_async(**kw)

    if loop_name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(go())
    return asyncio.run(go())


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_name(request):
    return request.param


def test_shell_behaves_the_same_on_both_loops(tmp_path, loop_name):
    (tmp_path / "sub").mkdir()
    pids = tmp_path / "pids"
    dag = DAG(env={"GLOBAL": "g"})
    dag.shell("ok", 'echo out; echo err >&2; echo "$GLOBAL $LOCAL $(basename "$PWD")"',
              env={"LOCAL": "l"}, cwd=str(tmp_path / "sub"))
    dag.shell("bad", "echo about to fail; exit 3")
    dag.shell("nowhere", "true", cwd=str(tmp_path / "missing"))
    dag.shell("slow", f"sleep 300 & echo $! >> {pids}; echo $$ >> {pids}; wait", timeout=1)
    dag.shell("watched", "for i in 1 2 3; do echo tick $i; sleep 0.1; done", heartbeat=30)
    dag.shell("many", "true")
    for i in range(30):  # a burst of starts, batched to the reaper
        dag.shell(f"burst{i}", f"echo {i}", depends_on=["many"])
    result = run_on(loop_name, dag, log_dir=tmp_path / "logs", fail_fast=False, concurrency=8)
    assert Path(result["ok"].log_path).read_text() == "out\nerr\ng l sub\n"
    err = result["bad"].error
    assert isinstance(err, CommandFailed)
    assert (err.exit_code, "about to fail" in err.tail) == (3, True)
    assert isinstance(result["nowhere"].error, FileNotFoundError)
    assert isinstance(result["slow"].error, TaskTimeout)
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 2
    deadline = time.monotonic() + GUARD
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in children)
    assert Path(result["watched"].log_path).read_text() == "tick 1\ntick 2\ntick 3\n"
    assert all(Path(result[f"burst{i}"].log_path).read_text() == f"{i}\n" for i in range(30))


def test_a_stopped_command_gets_sigterm_first_and_can_clean_up(tmp_path, loop_name):
    dag = DAG()
    dag.shell("tidy", "trap 'echo cleaning up; exit 5' TERM; echo ready; sleep 300 & wait",
              timeout=1)
    result = run_on(loop_name, dag, log_dir=tmp_path)
    assert isinstance(result["tidy"].error, TaskTimeout)
    assert Path(result["tidy"].log_path).read_text() == "ready\ncleaning up\n"


def test_a_killed_reaper_fails_its_attempts_and_kills_their_commands(tmp_path):
    from corral.executors.shell import ShellExecutor

    executor = ShellExecutor()
    pids = tmp_path / "pids"
    dag = DAG()
    dag.shell("victim", f"sleep 300 & echo $! >> {pids}; echo $$ >> {pids}; wait")
    dag.shell("killer", f"while [ $(wc -l < {pids} 2>/dev/null || echo 0) -lt 2 ]; "
                        "do sleep 0.05; done; kill -9 $PPID")  # its parent: the reaper
    result = run(dag, executors={"shell": executor}, log_dir=tmp_path, fail_fast=False)
    assert result["victim"].state is S.FAILED
    assert "reaper" in str(result["victim"].error)
    children = [int(p) for p in pids.read_text().split()]
    deadline = time.monotonic() + GUARD
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in children)


# --------------------------------------------------------------------- process workers and corral


def test_a_worker_whose_corral_is_gone_exits_quietly():
    import subprocess
    from multiprocessing.connection import Connection

    import cloudpickle

    to_worker_r, to_worker_w = os.pipe()
    from_worker_r, from_worker_w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.executors._process_worker",
         str(to_worker_r), str(from_worker_w), str(os.getpid())],
        pass_fds=(to_worker_r, from_worker_w), stderr=subprocess.PIPE)
    os.close(to_worker_r)
    os.close(from_worker_w)
    os.close(from_worker_r)  # nobody will read the result: as if corral had died meanwhile
    tx = Connection(to_worker_w, readable=False)
    tx.send_bytes(cloudpickle.dumps((time.sleep, (0.1,), {}, None, None)))
    tx.close()
    _, stderr = proc.communicate(timeout=GUARD)
    assert proc.returncode == 0
    assert b"Traceback" not in stderr, stderr.decode()


def test_a_worker_started_for_a_dead_corral_exits_at_once():
    import subprocess

    to_worker_r, to_worker_w = os.pipe()
    from_worker_r, from_worker_w = os.pipe()
    # Its parent is this process, not the pid it is told: it must not wait for work.
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.executors._process_worker",
         str(to_worker_r), str(from_worker_w), "1"],
        pass_fds=(to_worker_r, from_worker_w), stderr=subprocess.PIPE)
    os.close(to_worker_r)
    os.close(from_worker_w)
    try:
        _, stderr = proc.communicate(timeout=GUARD)  # with the pipe to it still open
    finally:
        os.close(to_worker_w)
        os.close(from_worker_r)
    assert proc.returncode == 0
    assert stderr == b""


def test_a_command_that_cannot_be_started_fails_its_attempt_only(tmp_path):
    dag = DAG()
    dag.shell("nul", "echo a\0b")
    dag.shell("fine", "echo fine")
    # A hang guard: a start that fails without a word would leave the run waiting forever.
    result = asyncio.run(asyncio.wait_for(dag.run_async(log_dir=tmp_path, fail_fast=False),
                                          GUARD))
    assert isinstance(result["nul"].error, ValueError)
    assert "null byte" in str(result["nul"].error)
    assert result["fine"].ok


def test_a_shell_task_sees_the_environment_as_it_is_when_it_starts(tmp_path, monkeypatch):
    # The reaper starts commands with the environment it inherited, unless corral's changed
    # since: a variable a Python task sets must reach the commands that run after it.
    monkeypatch.delenv("LATE_VAR", raising=False)
    dag = DAG()
    dag.shell("before", "echo before")
    dag.add(os.environ.__setitem__, "LATE_VAR", "late", id="set",
            options={"depends_on": ["before"]})
    dag.shell("after", 'echo "${LATE_VAR:-unset}"', depends_on=["set"])
    result = run(dag, log_dir=tmp_path)
    assert Path(result["after"].log_path).read_text() == "late\n"
