"""Real DAGs run with Runner + StoreRecorder against both stores, then reloaded and checked.

The crash test runs a pipeline in a subprocess, SIGKILLs it while a task is running (after a
marker file says so and the store shows what already succeeded), then resumes it in another
subprocess: every task appends its id to a file, so re-executions are counted, not guessed.
Timeouts are hang guards only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import corral
from corral._errors import BrokenStore
from corral._events import RunInfo, Transition
from corral._result import RunResult
from corral._runner import Runner
from corral._spec import TaskState
from corral.store import StoredStatus, StoreRecorder, open_store, plan_resume

S = TaskState
HANG_GUARD_S = 60.0


class Collector:
    """A listener keeping every transition the runner reports."""

    def __init__(self) -> None:
        self.seen: list[Transition] = []
        self.batches = 0

    def run_started(self, run: RunInfo) -> None:
        pass

    def transitions(self, batch: list[Transition]) -> None:
        self.seen.extend(batch)
        self.batches += 1

    def run_finished(self, result: RunResult) -> None:
        pass


def run(graph, store, *, done=None, resume_of=None, **options):
    collector = Collector()
    recorder = StoreRecorder(store, resume_of=resume_of)
    runner = Runner(graph, listeners=[recorder, collector], done=done, **options)
    recorder.attach(runner)
    result = asyncio.run(runner.run())
    return result, recorder, collector


def by_task(transitions) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for t in transitions:
        task = t.task if isinstance(t, Transition) else t.task_id
        out.setdefault(task, []).append(str(t.state))
    return out


def mixed_dag(tmp_path: Path) -> corral.DAG:
    calls = {"flaky": 0}
    dag = corral.DAG("mixed")

    @dag.task
    def source() -> list[int]:
        return [1, 2, 3]

    @dag.task(retries=2, retry_delay=0)
    def flaky(rows: list[int]) -> int:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ValueError("first try fails")
        return sum(rows)

    @dag.task
    def broken(rows: list[int]) -> int:
        raise RuntimeError("boom")

    @dag.task
    def after_broken(x: int) -> int:
        return x

    @dag.task
    def skipper() -> None:
        raise corral.Skip()

    rows = source()
    flaky(rows)
    after_broken(broken(rows))
    skipper()
    dag.shell("exit3", "echo out; exit 3")
    return dag


def test_every_transition_is_stored_with_values_errors_and_timings(open_test_store, tmp_path):
    store = open_test_store()
    graph = mixed_dag(tmp_path).validate()
    result, recorder, collector = run(graph, store, fail_fast=False,
                                      log_dir=tmp_path / "logs")
    assert result.status is corral.RunStatus.FAILED
    stored = store.load_run(result.run_id)  # also checks the history against the rules

    assert by_task(stored.transitions) == by_task(collector.seen)
    assert by_task(stored.transitions)["flaky"] == [
        "ready", "running", "retry_wait", "ready", "running", "succeeded"]
    flaky = [t for t in stored.transitions if t.task_id == "flaky"]
    assert [t.attempt for t in flaky] == [0, 1, 1, 1, 2, 2]
    assert flaky[2].error == "ValueError: first try fails"
    assert "first try fails" in (flaky[2].traceback or "")
    assert all(t.duration_s is not None and t.duration_s >= 0 for t in flaky
               if t.state in (S.RETRY_WAIT, S.SUCCEEDED))
    exit3 = [t for t in stored.transitions if t.task_id == "exit3"]
    assert exit3[-1].state is S.FAILED
    assert exit3[-1].exit_code == 3
    assert exit3[-1].executor == "shell"
    assert exit3[1].log_path
    assert Path(exit3[1].log_path).read_text().strip() == "out"
    # A worker is who ran an attempt, when its executor names one: local executors do not
    # (the process that recorded the run is the run's host and pid).
    assert all(t.worker is None for t in stored.transitions)
    assert (stored.run.host, stored.run.pid) == (os.uname().nodename, os.getpid())

    tasks = stored.tasks
    assert (tasks["source"].value, tasks["flaky"].value) == ([1, 2, 3], 6)
    assert (tasks["flaky"].state, tasks["flaky"].attempts) == (S.SUCCEEDED, 2)
    assert tasks["broken"].state is S.FAILED
    assert tasks["after_broken"].state is S.UPSTREAM_FAILED
    assert tasks["skipper"].state is S.SKIPPED
    run_record = stored.run
    assert run_record.status is StoredStatus.FAILED
    assert run_record.is_finished
    assert not run_record.lease_live
    assert [e.kind for e in store.events(result.run_id)] == ["run_started", "run_finished"]
    assert recorder.error is None


def test_every_attempt_of_an_in_process_task_records_its_log_path(open_test_store, tmp_path):
    # A thread task that prints has a log; one that finished before the recorder saw it start
    # (the usual case: the batch is delivered after the attempt ended) must record it too.
    store = open_test_store()
    dag = corral.DAG("printing")
    tries = []

    @dag.task(retries=1, retry_delay=0)
    def chatty():
        tries.append(1)
        print(f"attempt {len(tries)} speaking")
        if len(tries) == 1:
            raise ValueError("again")

    @dag.task
    async def quiet():
        return 1

    chatty()
    quiet()
    result, _, _ = run(dag.validate(), store, log_dir=tmp_path / "logs")
    assert result.ok
    started = {(t.task_id, t.attempt): t.log_path
               for t in store.load_run(result.run_id).transitions if t.state is S.RUNNING}
    assert set(started) == {("chatty", 1), ("chatty", 2), ("quiet", 1)}
    for n in (1, 2):
        path = started["chatty", n]
        assert path is not None
        assert Path(path).read_text() == f"attempt {n} speaking\n"
    assert started["quiet", 1] is not None  # where its log would be; it wrote none
    assert not Path(started["quiet", 1]).exists()


def test_many_transitions_are_group_committed(open_test_store):
    store = open_test_store()
    dag = corral.DAG("wide")
    for k in range(200):
        dag.add(int, k, id=f"t{k}")
    result, recorder, collector = run(dag.validate(), store, concurrency=8)
    stored = store.load_run(result.run_id)
    assert len(stored.transitions) == len(collector.seen) == 600
    assert all(stored.tasks[f"t{k}"].value == k for k in range(200))
    # Several transitions per commit: the loop never waits for the disk.
    assert recorder.flushes < len(collector.seen) / 3, (recorder.flushes,
                                                               collector.batches)


def test_a_store_failing_mid_run_raises_at_the_end_and_keeps_a_valid_prefix(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    dag = corral.DAG("big")
    a = dag.add(bytes, 10, id="small")
    dag.add(lambda _: os.urandom(300_000), a, id="huge")  # incompressible, over the limit
    graph = dag.validate()
    recorder = StoreRecorder(store)
    runner = Runner(graph, listeners=[recorder])
    recorder.attach(runner)
    store.value_limit = 10_000_000  # inline, so the page limit below bites
    store.migrate()
    conn = store.connector.connection  # type: ignore[attr-defined]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 20}")
    with pytest.raises(BrokenStore, match=r"(?s)full.*store: sqlite:///"):
        asyncio.run(runner.run())
    assert recorder.result is not None
    assert recorder.result.ok
    stored = store.load_run(runner.run_id)  # a consistent prefix, not a corrupt history
    assert stored.run.status is StoredStatus.RUNNING
    assert stored.tasks["huge"].state is not S.SUCCEEDED
    store.close()


def test_resume_in_process_reuses_what_succeeded(open_test_store, tmp_path):
    store = open_test_store()
    ran: list[str] = []
    broken = {"yes": True}

    def build(b_offset: int = 1):
        dag = corral.DAG("resumable")

        def a() -> int:
            ran.append("a")
            return 1

        def b(x: int) -> int:
            ran.append("b")
            return x + b_offset

        def c(x: int) -> int:
            ran.append("c")
            if broken["yes"]:
                raise RuntimeError("c is broken")
            return x * 10

        def d() -> str:
            ran.append("d")
            return "d"

        av = dag.add(a, id="a")
        cv = dag.add(c, dag.add(b, av, id="b"), id="c")
        dag.add(lambda x: x + 1, cv, id="e")
        dag.add(d, id="d")
        return dag.validate()

    first, _, _ = run(build(), store, fail_fast=False)
    assert first.status is corral.RunStatus.FAILED
    assert store.latest_unfinished("resumable").id == first.run_id

    broken["yes"] = False
    ran.clear()
    graph = build()
    plan = plan_resume(graph, store.load_run(first.run_id))
    assert plan.reuse == {"a": 1, "b": 2, "d": "d"}
    assert plan.rerun == {"c": "failed", "e": "upstream failed"}
    second, _, _ = run(graph, store, done=plan.reuse, resume_of=first.run_id)
    assert second.ok
    assert second["e"].value == 21
    assert sorted(ran) == ["c"]
    resumed = store.load_run(second.run_id)
    assert resumed.run.resumed_from == first.run_id
    assert resumed.run.reused == ("a", "b", "d")
    assert {t: resumed.tasks[t].value for t in "abcde"} == {
        "a": 1, "b": 2, "c": 20, "d": "d", "e": 21}
    assert store.get_run(first.run_id).resumed_by == second.run_id
    assert store.latest_unfinished("resumable") is None


# ---------------------------------------------------------------------------- crash


PIPELINE = '''
import asyncio, json, sys, time
from pathlib import Path

import corral
from corral._runner import Runner
from corral.store import StoreRecorder, open_store, plan_resume

HERE = Path(__file__).parent


def log(name):
    with open(HERE / "executions.txt", "a") as f:
        f.write(name + "\\n")


def a():
    log("a"); return 1

def b(x):
    log("b"); return x + 1

def d():
    log("d"); return "d"

def c(x):
    log("c")
    if (HERE / "block").exists():
        (HERE / "c-started").touch()
        while True:  # until SIGKILL
            time.sleep(0.05)
    return x * 10

def e(x):
    log("e"); return x + 1


def build():
    dag = corral.DAG("crashy")
    av = dag.add(a, id="a")
    cv = dag.add(c, dag.add(b, av, id="b"), id="c")
    dag.add(e, cv, id="e")
    dag.add(d, id="d")
    return dag.validate()


async def main(mode, url, old=None):
    store = open_store(url, values_dir=HERE / "values")
    graph = build()
    done = {}
    if mode == "resume":
        plan = plan_resume(graph, store.load_run(old))
        (HERE / "plan.json").write_text(json.dumps({"reuse": plan.reuse, "rerun": plan.rerun}))
        done = plan.reuse
    recorder = StoreRecorder(store, resume_of=old, lease=1.0, renew_every=0.2)
    runner = Runner(graph, listeners=[recorder], done=done, concurrency=4)
    recorder.attach(runner)
    (HERE / f"{mode}.run_id").write_text(runner.run_id)
    result = await runner.run()
    print(json.dumps({"status": str(result.status), "e": result["e"].value}))


asyncio.run(main(*sys.argv[1:]))
'''


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"hang guard: gave up waiting for {what}")
        time.sleep(0.02)


def test_a_killed_run_resumes_without_redoing_what_succeeded(store_url, store, tmp_path):
    script = tmp_path / "crashy.py"
    script.write_text(textwrap.dedent(PIPELINE))
    (tmp_path / "block").touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    proc = subprocess.Popen([sys.executable, str(script), "run", store_url], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (tmp_path / "c-started").exists() or proc.poll() is not None,
                 "task c to start")
        assert proc.poll() is None, proc.communicate()
        run_id = (tmp_path / "run.run_id").read_text()

        def recorded() -> bool:
            states = {t: s.state for t, s in store.load_run(run_id).tasks.items()}
            return states == {"a": S.SUCCEEDED, "b": S.SUCCEEDED, "c": S.RUNNING,
                              "d": S.SUCCEEDED, "e": None}

        wait_for(recorded, "the store to show a, b, d succeeded and c running")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == -signal.SIGKILL

    crashed = store.get_run(run_id)
    assert crashed.status is StoredStatus.RUNNING
    assert not crashed.is_finished
    assert store.latest_unfinished("crashy").id == run_id
    wait_for(lambda: not store.get_run(run_id).lease_live, "the dead run's lease to lapse")

    (tmp_path / "block").unlink()
    out = subprocess.run([sys.executable, str(script), "resume", store_url, run_id],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
                         timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"status": "succeeded", "e": 21}
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan == {"reuse": {"a": 1, "b": 2, "d": "d"},
                    "rerun": {"c": "was running", "e": "never ran"}}

    executions = (tmp_path / "executions.txt").read_text().split()
    assert sorted(executions) == ["a", "b", "c", "c", "d", "e"]  # only c ran twice

    new_id = (tmp_path / "resume.run_id").read_text()
    old = store.get_run(run_id)
    assert (old.status, old.resumed_by) == (StoredStatus.CRASHED, new_id)
    resumed = store.load_run(new_id)
    assert resumed.run.status is StoredStatus.SUCCEEDED
    assert resumed.run.reused == ("a", "b", "d")
    assert {t: s.value for t, s in resumed.tasks.items()} == {
        "a": 1, "b": 2, "c": 20, "d": "d", "e": 21}
    assert store.latest_unfinished("crashy") is None


def test_dag_run_with_a_store_records_the_run(tmp_path):
    from corral.store import open_store

    url = f"sqlite:///{tmp_path}/runs.db"
    dag = corral.DAG("python-made")
    a = dag.add(lambda: 20, id="a")
    dag.add(lambda x: x + 1, a, id="b")
    result = dag.run(store=url, log_dir=None, handle_signals=False)
    assert result["b"].value == 21
    with open_store(url) as store:
        stored = store.load_run(result.run_id)
    assert stored.run.pipeline == "python-made"
    assert {t: s.state for t, s in stored.tasks.items()} == {
        "a": corral.TaskState.SUCCEEDED, "b": corral.TaskState.SUCCEEDED}
    assert stored.tasks["b"].value == 21
