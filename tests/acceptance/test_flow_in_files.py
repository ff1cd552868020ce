"""A pipeline with a matrix, conditions and values passed between `call:` tasks, through the
real CLI: what ran, what was skipped, and which values arrived where."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.acceptance.conftest import RunCli

JOBS = """
import json, os

def fetch(n):
    return list(range(n))

def total(xs, scale):
    return sum(xs) * int(scale)

def collect(values, tests):
    with open("collected.json", "w") as f:
        json.dump({"values": values, "tests": tests}, f)
    return values
"""

PIPELINE = """
name: flow
params: {deploy: "no", scale: "2"}
tasks:
  fetch: {call: "jobs:fetch", args: [4]}
  total: {call: "jobs:total", args: ["${{ tasks.fetch }}"], kwargs: {scale: "${{ params.scale }}"}}
  test:
    cmd: "echo python=${matrix.python} db=${matrix.db} > test-${matrix.python}-${matrix.db}.txt"
    matrix: {python: ["3.11", "3.12"], db: [pg, sqlite]}
  collect:
    call: "jobs:collect"
    args: ["${{ tasks.total }}"]
    kwargs: {tests: "${{ tasks.test }}"}
  deploy:
    cmd: "touch deployed"
    when: "${{ params.deploy == 'yes' and tasks.total.value == 12 }}"
  after-deploy: {cmd: "touch after", depends_on: [deploy]}
  notify:
    cmd: "touch notified"
    when: "${{ tasks['test[python=3.12,db=pg]'].state == 'succeeded' }}"
"""


def states(proc_stdout: str) -> dict[str, str]:
    return {k: v["state"] for k, v in json.loads(proc_stdout)["tasks"].items()}


def test_matrix_conditions_and_values_run_as_written(
    corral: RunCli, write: Callable[..., Path], tmp_path: Path
) -> None:
    write("jobs.py", JOBS)
    write("p.yml", PIPELINE)
    proc = corral("run", "p.yml", "--json")
    assert proc.returncode == 0, proc.stderr
    got = states(proc.stdout)
    assert got["deploy"] == "skipped"  # deploy is "no"
    assert got["after-deploy"] == "skipped"  # downstream of a skipped task
    assert got["notify"] == "succeeded"
    assert sorted(p.name for p in tmp_path.glob("test-*.txt")) == [
        "test-3.11-pg.txt", "test-3.11-sqlite.txt", "test-3.12-pg.txt", "test-3.12-sqlite.txt"]
    assert (tmp_path / "test-3.12-sqlite.txt").read_text() == "python=3.12 db=sqlite\n"
    # total got fetch's list; collect got total's value, and the matrix's four (None) values
    assert json.loads((tmp_path / "collected.json").read_text()) == {
        "values": 12, "tests": [None, None, None, None]}
    assert not (tmp_path / "deployed").exists()

    proc = corral("run", "p.yml", "--json", "-p", "deploy=yes")
    assert proc.returncode == 0, proc.stderr
    assert states(proc.stdout)["deploy"] == "succeeded"
    assert (tmp_path / "deployed").exists()
    assert (tmp_path / "after").exists()


def test_expression_problems_are_validation_errors_with_lines(
    corral: RunCli, write: Callable[..., Path]
) -> None:
    write("jobs.py", JOBS)
    write("p.yml", """
        tasks:
          fetch: {call: "jobs:fetch", args: [4]}
          total: {call: "jobs:total", args: ["${{ tasks.fecth }}", 1]}
          ship: {cmd: "true", when: "${{ open('/etc/passwd') }}"}
        """)
    proc = corral("validate", "p.yml")
    assert proc.returncode == 2
    assert "p.yml:3: task 'total': tasks.fecth: there is no task 'fecth'" in proc.stdout + \
        proc.stderr
    assert "did you mean 'fetch'?" in proc.stdout + proc.stderr
    assert "p.yml:4: task 'ship': when:" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_condition_that_cannot_be_evaluated_fails_its_task_with_the_reason(
    corral: RunCli, write: Callable[..., Path]
) -> None:
    write("jobs.py", JOBS)
    write("p.yml", """
        tasks:
          fetch: {call: "jobs:fetch", args: [2]}
          ship: {cmd: "true", when: "${{ tasks.fetch.value.missing == 1 }}"}
        """)
    proc = corral("run", "p.yml", "--json")
    assert proc.returncode == 1
    ship = json.loads(proc.stdout)["tasks"]["ship"]
    assert ship["state"] == "failed"
    assert ship["error"] == "ExpressionError: tasks.fetch: its value [0, 1] has no ['missing']"
