"""``kill -9`` of corral while a run grows (a for_each fan-out and a planner's plan), then
resume, on both stores: every instance and planned task completes, none recorded as succeeded
runs again, and the planner is not asked again once its plan was recorded. Tasks append
``start``/``end`` lines to a marker file, so executions are counted, not timed. Timeouts are
hang guards only."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers.killing import freeze_succeeded, kill_run
from tests.helpers.waiting import HANG_GUARD_S, wait_for

pytestmark = pytest.mark.slow

JOBS = '''
import os, time
import corral

def _mark(what, name):
    with open("marks.txt", "a") as f:
        f.write(f"{what} {name}\\n")

def items():
    return list(range(6))

def work(k):
    _mark("start", f"work[{k}]")
    time.sleep(0.3)
    _mark("end", f"work[{k}]")
    return k

def planner():
    _mark("start", "planner")
    plan = corral.Plan()
    for k in range(3):
        plan.add("growjobs:step", k, id=f"step-{k}")
    _mark("end", "planner")
    return plan

def step(k):
    _mark("start", f"step-{k}")
    time.sleep(0.3)
    _mark("end", f"step-{k}")
    return k

def total(worked, planned):
    _mark("start", "total")
    with open("total.txt", "w") as f:
        f.write(f"{sum(worked)} {sorted(planned.items())}")
    _mark("end", "total")
'''

PIPELINE = '''
name: grows
concurrency: 2
tasks:
  items: {call: "growjobs:items"}
  work: {call: "growjobs:work", for_each: items}
  planner: {call: "growjobs:planner"}
  total: {call: "growjobs:total", args: ["${{ tasks.work }}", "${{ tasks.planner }}"]}
'''

EXPECTED = [*(f"work[{k}]" for k in range(6)), "planner", *(f"step-{k}" for k in range(3)),
            "total"]


def marks(tmp_path: Path) -> collections.Counter[tuple[str, str]]:
    path = tmp_path / "marks.txt"
    text = path.read_text() if path.exists() else ""
    return collections.Counter(tuple(line.split()[:2]) for line in text.splitlines())


def test_a_growing_run_killed_twice_then_resumed(store_url: str, tmp_path: Path) -> None:
    from corral.store import open_store

    (tmp_path / "growjobs.py").write_text(JOBS)
    (tmp_path / "grows.yaml").write_text(PIPELINE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    common = ["--store", store_url, "--lease", "2s"]

    def corral(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "corral", *args, *common], cwd=tmp_path, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)

    def ends() -> int:
        return sum(n for (what, _), n in marks(tmp_path).items() if what == "end")

    store = open_store(store_url, values_dir=tmp_path / "values")
    frozen: dict[str, int] = {}  # task recorded succeeded -> its starts then: never more
    run_id = None
    try:
        for n in (3, 7):  # kill after this many task ends (cumulative)
            proc = corral("run", "grows.yaml") if run_id is None else corral("resume", run_id)
            wait_for(lambda n=n: ends() >= n or proc.poll() is not None, f"{n} task ends")
            assert proc.poll() is None, ("the run ended before the kill", proc.communicate())
            run_id = kill_run(proc, store)
            freeze_succeeded(store, run_id, marks(tmp_path), frozen)
        done = corral("resume", run_id)
        stdout, stderr = done.communicate(timeout=HANG_GUARD_S * 3)
        assert done.returncode == 0, stdout + stderr
        final = store.load_run(store.list_runs(limit=1)[0].id)
    finally:
        store.close()

    counts = marks(tmp_path)
    assert all(counts["end", task] >= 1 for task in EXPECTED), counts
    # Nothing recorded as succeeded ran again after it was recorded (the planner included).
    assert {t: counts["start", t] for t in frozen} == frozen, counts
    assert (tmp_path / "total.txt").read_text() == (
        "15 [('step-0', 0), ('step-1', 1), ('step-2', 2)]")
    assert {f"work[{k}]" for k in range(6)} <= set(final.tasks)  # shown, reused or not
    assert all(str(final.tasks[t].state) == "succeeded" for t in EXPECTED)
