"""corral.context(): the run's shared key-value context, through the Python API — shared by
thread and async tasks, JSON data only, absent in process tasks, persisted and restored on
resume."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import corral
from corral import DAG, RunStatus
from corral._context import RunContext
from corral.store import open_store


def run(dag: DAG, **kw: Any) -> Any:
    kw.setdefault("handle_signals", False)
    kw.setdefault("log_dir", None)
    return dag.run(**kw)


def test_the_mapping_copies_json_data_counts_atomically_and_reports_changes() -> None:
    ctx = RunContext({"a": 1})
    assert ctx.changes() == ({"a": 1}, [])  # what it starts with is stored too
    plan = ["x"]
    ctx["plan"] = plan
    plan.append("y")  # the caller's list is not the stored one
    assert ctx["plan"] == ["x"]
    del ctx["a"]
    assert ctx.changes() == ({"plan": ["x"]}, ["a"])
    assert ctx.changes() == ({}, [])
    with pytest.raises(TypeError, match="takes JSON data"):
        ctx["when"] = object()
    with pytest.raises(TypeError, match="keys are text"):
        ctx[1] = 2  # type: ignore[index]

    def bump() -> None:
        for _ in range(200):
            ctx.update_with("n", lambda n: n + 1, 0)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)  # hang guard
    assert ctx["n"] == 800


def test_thread_and_async_tasks_share_the_context_and_the_result_has_it() -> None:
    dag = DAG("ctx")

    @dag.task
    def plan() -> None:
        corral.context()["steps"] = ["fetch", "sum"]

    @dag.task(depends_on=["plan"])
    async def step() -> list[str]:
        ctx = corral.context()
        ctx.update_with("done", lambda n: n + 1, 0)
        return list(ctx["steps"])

    plan()
    step()
    result = run(dag)
    assert result.status is RunStatus.SUCCEEDED
    assert result["step"].value == ["fetch", "sum"]
    assert result.context == {"steps": ["fetch", "sum"], "done": 1}
    # After the run, outside any task: the run is no longer found. (Asked of this run only:
    # in a shared test process another test's run may still be going, which context()
    # would rightly fall back to when it is the only one.)
    assert result.context is not None
    from corral import _context

    assert all(ctx.snapshot() != result.context for ctx in _context._running)


def test_outside_any_run_context_says_so() -> None:
    code = ("import corral\ntry:\n    corral.context()\n"
            "except corral.CorralError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert "no corral run is running" in out


def use_context_in_a_process() -> None:
    corral.context()["x"] = 1


def test_a_process_task_has_no_context_and_says_so() -> None:
    dag = DAG("proc")
    dag.add(use_context_in_a_process, id="p", options={"executor": "process"})
    result = run(dag)
    assert result.status is RunStatus.FAILED
    assert "not in process or shell tasks" in str(result["p"].error)


def test_the_context_is_stored_and_restored_on_resume(tmp_path: Path) -> None:
    broken = [True]
    seen: list[Any] = []

    def first() -> None:
        corral.context()["token"] = "abc"

    def second() -> None:
        seen.append(corral.context().get("token"))
        if broken[0]:
            raise RuntimeError("not yet")
        corral.context()["finished"] = True

    dag = DAG("keep")
    a = dag.add(first, id="first")
    dag.add(second, id="second", options={"depends_on": [a]})
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    failed = run(dag, store=url)
    assert failed.status is RunStatus.FAILED
    with open_store(url) as store:
        assert store.load_run(failed.run_id).context == {"token": "abc"}
    broken[0] = False
    resumed = run(dag, store=url, resume=failed.run_id)
    assert resumed.status is RunStatus.SUCCEEDED
    assert resumed["first"].attempts == 0  # reused: only the context brought its token back
    assert seen == ["abc", "abc"]
    with open_store(url) as store:
        assert store.load_run(resumed.run_id).context == {"token": "abc", "finished": True}
