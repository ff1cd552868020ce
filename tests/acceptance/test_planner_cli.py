"""Planner tasks through the real CLI: the plan's tasks run and are stored, a resume neither
asks the planner again nor re-runs the plan's finished tasks, and a bad plan fails the
planner with a clear PlanError."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.acceptance.conftest import RunCli

JOBS = """
import os
import corral

def planner(n):
    with open("asked", "a") as f:
        f.write("x")
    plan = corral.Plan()
    parts = [plan.add("jobs:part", k, id=f"part-{k}") for k in range(int(n))]
    plan.add("jobs:join", parts, id="join")
    return plan

def part(k):
    with open(f"ran-{k}", "a") as f:
        f.write("x")
    if k == 1 and not os.path.exists("fixed"):
        raise RuntimeError("part 1 is broken")
    return k * 10

def join(parts):
    return sum(parts)

def report(results):
    with open("report.json", "w") as f:
        f.write(__import__("json").dumps(results, sort_keys=True))

def clash():
    plan = corral.Plan()
    plan.add("jobs:part", 0, id="report")
    return plan
"""

PIPELINE = """
name: planned
tasks:
  plan: {call: "jobs:planner", args: [3]}
  report: {call: "jobs:report", args: ["${{ tasks.plan }}"]}
"""


def test_a_resume_keeps_the_plan_and_its_finished_tasks(
    corral: RunCli, write: Callable[..., Path], tmp_path: Path
) -> None:
    write("jobs.py", JOBS)
    write("planned.yml", PIPELINE)
    first = corral("run", "planned.yml", "--json", "--keep-going")
    assert first.returncode == 1, first.stderr
    doc = json.loads(first.stdout)
    assert {t: v["state"] for t, v in doc["tasks"].items()} == {
        "plan": "succeeded", "report": "upstream_failed", "part-0": "succeeded",
        "part-1": "failed", "part-2": "succeeded", "join": "upstream_failed"}
    shown = corral("show", doc["run_id"], "--json")
    assert set(json.loads(shown.stdout)["tasks"]) == set(doc["tasks"])

    (tmp_path / "fixed").touch()
    second = corral("resume", doc["run_id"], "--json")
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "asked").read_text() == "x"  # the planner was asked once
    assert [(tmp_path / f"ran-{k}").read_text() for k in range(3)] == ["x", "xx", "x"]
    assert json.loads((tmp_path / "report.json").read_text()) == {
        "join": 30, "part-0": 0, "part-1": 10, "part-2": 20}


def test_a_plan_with_an_id_the_run_has_fails_the_planner(
    corral: RunCli, write: Callable[..., Path]
) -> None:
    write("jobs.py", JOBS)
    write("clash.yml", """
tasks:
  plan: {call: "jobs:clash"}
  report: {call: "jobs:report", args: ["${{ tasks.plan }}"]}
""")
    proc = corral("run", "clash.yml", "--json", "--no-store")
    assert proc.returncode == 1, proc.stderr
    error = json.loads(proc.stdout)["tasks"]["plan"]["error"]
    assert error.startswith("PlanError: the plan of task 'plan' cannot join the run")
    assert "duplicate task id 'report'" in error
    assert "Traceback" not in proc.stderr
