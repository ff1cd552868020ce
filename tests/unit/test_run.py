"""The run loop end to end through the Python API: data passing, failure policies, events."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import corral
from corral import DAG, RunStatus, TaskState, ValidationError
from corral._errors import CallNotFound
from corral._runner import Runner

S = TaskState


def run(dag, **kw):
    kw.setdefault("handle_signals", False)
    kw.setdefault("log_dir", None)
    return dag.run(**kw)


def test_data_passing_and_explicit_dependencies():
    dag = DAG("etl")
    seen = []

    @dag.task
    def extract():
        return [1, 2, 3]

    @dag.task(retries=1)
    def transform(rows, *, factor):
        return [r * factor for r in rows]

    @dag.task
    async def load(rows, meta):
        await asyncio.sleep(0)
        return {"n": len(rows), "sum": sum(rows), **meta}

    @dag.task
    def audit():
        seen.append("audit")

    rows = extract()
    doubled = transform(rows, factor=2)
    tripled = transform(rows, factor=3)  # the same function twice: a second task
    final = load(doubled, {"other": tripled})
    audit.options(id="audit", depends_on=[final])()
    result = run(dag)
    assert result.ok, result.to_dict()
    assert tripled.id == "transform-2"
    assert result["load"].value == {"n": 3, "sum": 12, "other": [3, 6, 9]}
    assert result.outputs["transform-2"] == [3, 6, 9]
    assert result["audit"].started_at >= result["load"].finished_at
    assert seen == ["audit"]
    graph = dag.validate()
    assert [graph.ids[j] for j in graph.deps[graph.index["load"]]] == ["transform", "transform-2"]


def test_rshift_orders_without_data():
    order = []
    dag = DAG()
    a = dag.add(order.append, "a", id="a")
    b = dag.add(order.append, "b", id="b")
    c = dag.add(order.append, "c", id="c")
    a >> b >> c
    result = run(dag, concurrency=4)
    assert result.ok
    assert order == ["a", "b", "c"]


def test_fail_fast_cancels_running_work_and_marks_the_rest():
    started = threading.Event()

    def slow():
        started.set()
        time.sleep(30)

    def fail():
        started.wait(30)
        raise ValueError("bad input")

    dag = DAG()
    dag.add(slow, id="slow", options={"executor": "thread"})
    f = dag.add(fail, id="fail")
    dag.add(lambda: 1, id="after").after(f)
    dag.add(lambda: 1, id="queued", options={"priority": -1})
    result = run(dag, concurrency=2)
    assert result.status is RunStatus.FAILED
    assert result["fail"].state is S.FAILED
    assert isinstance(result["fail"].error, ValueError)
    assert result["slow"].state is S.CANCELLED
    assert result["after"].state is S.UPSTREAM_FAILED
    assert result["queued"].state is S.CANCELLED


def test_keep_going_and_all_done_cleanup():
    dag = DAG()
    build = dag.shell("build", "exit 1")
    dag.shell("unrelated", "true")
    dag.shell("package", "true", depends_on=[build])
    dag.shell("clean", "true", depends_on=[build], trigger_rule="all_done")
    result = run(dag, fail_fast=False, log_dir=None)
    assert {k: str(v.state) for k, v in result.items()} == {
        "build": "failed", "unrelated": "succeeded", "package": "upstream_failed",
        "clean": "succeeded",
    }
    assert result.status is RunStatus.FAILED


def test_fail_fast_still_runs_all_done_cleanup(tmp_path):
    # The default (fail-fast): the failure cancels the rest, but the cleanup runs once its
    # dependencies ended, and what follows the cleanup does not.
    marker = tmp_path / "cleaned"
    dag = DAG()
    test = dag.shell("test", "exit 1")
    build = dag.shell("build", "true", depends_on=[test])
    clean = dag.shell("clean", f"touch {marker}", depends_on=[build],
                      trigger_rule="all_done")
    dag.shell("after_clean", "true", depends_on=[clean])
    result = run(dag, log_dir=None)
    assert {k: str(v.state) for k, v in result.items()} == {
        "test": "failed", "build": "upstream_failed", "clean": "succeeded",
        "after_clean": "cancelled",
    }
    assert marker.exists()
    assert result.status is RunStatus.FAILED


def test_allowed_failure_keeps_the_run_green():
    dag = DAG()
    flaky = dag.shell("flaky", "exit 2", allow_failure=True)
    dag.shell("next", "true", depends_on=[flaky])
    result = run(dag)
    assert result.ok
    assert result["flaky"].state is S.FAILED
    assert result["next"].state is S.SUCCEEDED


def test_only_runs_the_target_and_its_upstream():
    dag = DAG()
    a = dag.add(lambda: 1, id="a")
    b = dag.add(lambda x: x + 1, a, id="b")
    dag.add(lambda x: x + 1, b, id="c")
    dag.add(lambda: 0, id="d")
    result = run(dag, only=["b"])
    assert sorted(result) == ["a", "b"]
    with pytest.raises(ValidationError, match="did you mean 'b'"):
        run(dag, only=["bb"])


def test_cancel_stops_the_run_as_interrupted():
    async def main():
        release = asyncio.Event()

        async def waits():
            await release.wait()

        dag = DAG()
        dag.add(waits, id="w")
        dag.add(waits, id="w2")
        dag.add(lambda: 1, id="later", options={"depends_on": ["w"]})
        runner = Runner(dag.validate(), concurrency=4, log_dir=None)
        task = asyncio.create_task(runner.run())
        while runner.scheduler.running < 2:
            await asyncio.sleep(0.01)
        runner.cancel(2)
        return await asyncio.wait_for(task, 30)

    result = asyncio.run(main())
    assert result.status is RunStatus.INTERRUPTED
    assert result.signal == 2
    assert {k: str(v.state) for k, v in result.items()} == {
        "w": "cancelled", "w2": "cancelled", "later": "cancelled",
    }


class Recorder:
    def __init__(self):
        self.started = None
        self.events = []
        self.finished = None

    def run_started(self, run):
        self.started = run

    def transitions(self, batch):
        self.events.extend(batch)

    def run_finished(self, result):
        self.finished = result


def test_listeners_see_every_transition_in_order():
    rec = Recorder()
    dag = DAG("watched")
    a = dag.add(lambda: 1, id="a")
    dag.add(lambda x: 1 / 0, a, id="b", options={"retries": 1, "retry_delay": 0})
    result = run(dag, listeners=[rec])
    assert rec.started.run_id == result.run_id == rec.finished.run_id
    by_task = {}
    for e in rec.events:
        by_task.setdefault(e.task, []).append(str(e.state))
    assert by_task == {
        "a": ["ready", "running", "succeeded"],
        "b": ["ready", "running", "retry_wait", "ready", "running", "failed"],
    }
    failed = [e for e in rec.events if e.state is S.FAILED]
    assert "ZeroDivisionError" in failed[0].error
    assert failed[0].attempt == 2


def test_resume_hands_stored_values_to_dependents_without_rerunning():
    calls = []

    def produce():
        calls.append("produce")
        return 10

    def consume(x):
        calls.append("consume")
        return x + 1

    dag = DAG()
    p = dag.add(produce, id="produce")
    dag.add(consume, p, id="consume")

    async def main():
        runner = Runner(dag.validate(), concurrency=1, log_dir=None, done={"produce": 10})
        return await runner.run()

    result = asyncio.run(main())
    assert calls == ["consume"]
    assert result["consume"].value == 11
    assert result["produce"].state is S.SUCCEEDED


def test_realised_critical_path_follows_the_last_finisher():
    dag = DAG()
    fast = dag.add(lambda: None, id="fast")
    slow = dag.add(time.sleep, 0.2, id="slow")
    dag.add(lambda: None, id="join").after(fast, slow)
    result = run(dag, concurrency=2)
    assert result.critical_path == ["slow", "join"]


def test_run_inside_a_running_loop_says_what_to_do():
    async def main():
        DAG().run()

    with pytest.raises(RuntimeError, match="await dag.run_async"):
        asyncio.run(main())


def test_unimportable_call_fails_the_task_not_the_run():
    dag = DAG()
    dag.add("no_such_module_xyz:fn", id="missing")
    dag.add(lambda: 1, id="fine")
    result = run(dag, fail_fast=False)
    error = result["missing"].error
    # An ImportError still, but one that says what was looked for and where.
    assert isinstance(error, CallNotFound)
    assert isinstance(error, ImportError)
    assert isinstance(error.__cause__, ModuleNotFoundError)
    assert "no module named 'no_such_module_xyz'" in str(error)
    assert error.searched
    assert error.module == "no_such_module_xyz"
    assert result["fine"].ok


def test_result_json_shape():
    dag = DAG("shape")
    dag.add(lambda: 1, id="a")
    data = run(dag).to_dict()
    assert {"run_id", "pipeline", "status", "started_at", "finished_at", "duration_s",
            "tasks"} <= set(data)
    assert data["tasks"]["a"]["state"] == "succeeded"
    assert data["tasks"]["a"]["error"] is None


def test_exported_members_match_all():
    import types

    exported = {name for name in dir(corral) if not name.startswith("_")
                and not isinstance(getattr(corral, name), types.ModuleType)}
    exported -= {"annotations"}
    assert len(set(corral.__all__)) == len(corral.__all__)  # ruff (RUF022) keeps it sorted
    assert exported | {"__version__", "load_pipeline"} >= set(corral.__all__)
    assert exported <= set(corral.__all__)


def test_import_corral_is_light():
    import subprocess
    import sys

    code = ("import sys, corral; heavy = {'yaml', 'pydantic', 'rich', 'cloudpickle', "
            "'multiprocessing', 'concurrent.futures.process', 'psycopg', 'click', 'dask', "
            "'distributed', 'mcp', 'fastapi', 'pydantic_settings'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_a_command_without_a_config_file_does_not_load_pydantic_settings(tmp_path):
    import os
    import subprocess
    import sys

    code = ("import sys; from corral.cli import main\n"
            "try:\n    main(['validate', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('pydantic_settings' in sys.modules, 'corral.cli._config' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path, env=env).stdout.strip().splitlines()[-1]
    assert out == "False True"  # the file was looked for, and none found


def test_a_run_without_dask_tasks_imports_no_dask_even_when_given_the_executor():
    import subprocess
    import sys

    code = ("import sys, corral; from corral.executors.dask import DaskExecutor; "
            "dag = corral.DAG(); dag.add(abs, -1, id='t'); "
            "r = dag.run(executors={'dask': DaskExecutor('tcp://127.0.0.1:1')}, log_dir=None); "
            "print(r.ok, sorted({'dask', 'distributed'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "True []"


def test_a_stalled_run_fails_with_a_diagnosis_instead_of_hanging():
    import dataclasses

    dag = DAG(resources={"gpu": 1})
    g = dag.add(lambda: 1, id="needs_gpu", options={"resources": {"gpu": 1}})
    dag.add(lambda x: x, g, id="after")
    dag.add(lambda: 2, id="free")
    graph = dag.validate()
    # the capacity vanishes after validation, as when a resource never frees
    starved = dataclasses.replace(graph, capacity={**graph.capacity, "gpu": 0})

    result = asyncio.run(Runner(starved, concurrency=2, log_dir=None).run())
    assert result.status is RunStatus.FAILED
    assert result["free"].ok
    assert result["needs_gpu"].state is S.CANCELLED
    assert "needs_gpu: lacks gpu (needs 1, 0 free)" in result.error
    assert "after: waits for needs_gpu" in result.error


def test_an_executor_that_cannot_start_work_fails_the_task_clearly():
    from corral._errors import BrokenExecutor
    from corral.executors import Executor

    class Broken(Executor):
        name = "thread"

        def submit(self, work):
            raise OSError("no threads left")

    dag = DAG()
    dag.add(lambda: 1, id="t")
    result = run(dag, executors={"thread": Broken()})
    assert isinstance(result["t"].error, BrokenExecutor)
    assert "no threads left" in str(result["t"].error)


def test_two_timeouts_in_one_turn_with_fail_fast():
    # Both expire at once; the first one's fail-fast stop cancels the second, which the run
    # loop must then leave alone (found by the scheduler property tests' simulator).
    dag = DAG()
    for name in ("a", "b"):
        dag.add(asyncio.sleep, 30, id=name, options={"timeout": 0.1})
    result = run(dag, concurrency=2)
    states = sorted(str(t.state) for t in result.values())
    assert states in (["cancelled", "failed"], ["failed", "failed"])
    assert result.status is RunStatus.FAILED


def test_task_ids_that_clean_up_alike_get_separate_logs(tmp_path):
    from corral._capture import log_name

    assert log_name("build") == "build"
    assert log_name("a/b") != log_name("a_b")
    assert log_name("a/b").startswith("a_b-")
    dag = DAG()
    dag.shell("a/b", "echo slash")
    dag.shell("a_b", "echo underscore")
    result = run(dag, log_dir=tmp_path)
    assert Path(result["a/b"].log_path).read_text() == "slash\n"
    assert Path(result["a_b"].log_path).read_text() == "underscore\n"


@pytest.mark.parametrize("action", ["tests.helpers.jobs:compute", lambda **kw: kw])
def test_task_options_given_to_add_as_keywords_are_refused_not_passed_to_the_function(action):
    dag = DAG()
    dag.add(lambda: 1, id="x")
    with pytest.raises(TypeError) as info:
        dag.add(action, depends_on=["x"], n=1)
    message = str(info.value)
    assert "'depends_on' is a task option" in message
    assert "options={'depends_on': ['x']}" in message
    assert len(dag) == 1  # nothing was added
    # Through options= it is a dependency, as meant.
    dag.add(action, id="y", options={"depends_on": ["x"]}, n=1)
    assert dag.validate().deps[1] == (0,)


def test_a_decorated_function_keeps_its_own_keyword_arguments():
    # Calling a @dag.task function passes its arguments, whatever their names: options go in
    # @dag.task(...) or .options(...).
    dag = DAG()

    @dag.task
    def wait(timeout, priority=0):
        return timeout + priority

    wait(timeout=2, priority=1)
    assert run(dag)["wait"].value == 3


def test_an_executor_that_cannot_start_fails_the_run_before_anyone_hears_of_it(tmp_path):
    from corral._errors import BrokenExecutor
    from corral.executors import Executor, Work
    from corral.store import open_store

    class Unreachable(Executor):
        async def start(self, sink: Any) -> None:
            raise BrokenExecutor("cannot reach the cluster at tcp://nowhere:1")

        def submit(self, work: Work) -> None:  # pragma: no cover - never started
            raise AssertionError("submitted to an executor that did not start")

    heard: list[str] = []

    class Ears:
        def run_started(self, run: Any) -> None:
            heard.append("started")

        def transitions(self, batch: Any) -> None:
            heard.append("transitions")

        def run_finished(self, result: Any) -> None:
            heard.append("finished")

    store = f"sqlite:///{tmp_path / 'runs.db'}"
    dag = DAG("unreachable")
    dag.add(abs, -1, id="t", options={"executor": "far"})
    with pytest.raises(BrokenExecutor, match="tcp://nowhere:1"):
        dag.run(executors={"far": Unreachable()}, listeners=[Ears()], store=store,
                log_dir=None)
    assert heard == []
    with open_store(store) as opened:
        assert opened.list_runs() == []  # no run recorded that never ran


def test_fast_tasks_are_timed_on_a_fresh_clock_under_uvloop():
    # uvloop's loop.time() is cached per iteration, in milliseconds: a run timed by it gave
    # tasks that took microseconds a duration of exactly 0 (and an MCP analysis left them off
    # its critical path).
    uvloop = pytest.importorskip("uvloop")
    dag = DAG()
    previous = None
    for k in range(20):
        previous = dag.add(lambda _=None: None, previous, id=f"t{k}")

    async def main():
        return await dag.run_async(concurrency=2)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(main())
    assert result.status is RunStatus.SUCCEEDED
    assert all(t.duration_s > 0 for t in result.values()), \
        [t.duration_s for t in result.values()]
