"""Fan-out over a result (`for_each:`) through the real CLI: one instance per item, the list of
their results downstream, the instances in `--json` and `corral show`, a resume that re-runs
only the instance that failed, and bad input as clear errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.acceptance.conftest import RunCli

JOBS = """
import os

def items():
    return [1, 2, 3]

def square(x, offset=0):
    with open(f"ran-{x}", "a") as f:
        f.write("x")
    if x == 3 and not os.path.exists("fixed"):
        raise RuntimeError("three is bad today")
    return x * x + offset

def total(xs):
    with open("total.txt", "w") as f:
        f.write(repr(xs))
    return sum(xs)

def not_a_list():
    return {"a": 1}
"""

PIPELINE = """
name: fan
tasks:
  items: {call: "jobs:items"}
  square: {call: "jobs:square", for_each: items, kwargs: {offset: 10}}
  total: {call: "jobs:total", args: ["${{ tasks.square }}"]}
"""


def test_for_each_runs_one_instance_per_item_and_resumes_only_the_failed_one(
    corral: RunCli, write: Callable[..., Path], tmp_path: Path
) -> None:
    write("jobs.py", JOBS)
    write("p.yml", PIPELINE)
    first = corral("run", "p.yml", "--json", "--keep-going")
    assert first.returncode == 1, first.stderr
    got = json.loads(first.stdout)
    states = {k: v["state"] for k, v in got["tasks"].items()}
    assert states == {"items": "succeeded", "square[0]": "succeeded",
                      "square[1]": "succeeded", "square[2]": "failed",
                      "square": "upstream_failed", "total": "upstream_failed"}
    shown = corral("show", got["run_id"])
    assert shown.returncode == 0, shown.stderr
    for task in ("square[0]", "square[1]", "square[2]"):
        assert task in shown.stdout

    (tmp_path / "fixed").touch()
    second = corral("resume", got["run_id"], "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert {k: v["attempts"] for k, v in again["tasks"].items()} == {
        "items": 0, "square[0]": 0, "square[1]": 0, "square[2]": 1, "square": 1, "total": 1}
    # total got the instances' results in order; only the failed instance ran again
    assert (tmp_path / "total.txt").read_text() == "[11, 14, 19]"
    assert [(tmp_path / f"ran-{x}").read_text() for x in (1, 2, 3)] == ["x", "x", "xx"]


def test_for_each_over_a_value_that_is_not_a_list_fails_the_task_clearly(
    corral: RunCli, write: Callable[..., Path]
) -> None:
    write("jobs.py", JOBS)
    write("p.yml", """
tasks:
  items: {call: "jobs:not_a_list"}
  square: {call: "jobs:square", for_each: items, retries: 3}
""")
    proc = corral("run", "p.yml", "--json", "--no-store")
    assert proc.returncode == 1, proc.stderr
    square = json.loads(proc.stdout)["tasks"]["square"]
    assert square["state"] == "failed"
    assert square["attempts"] == 1  # not retried: the list will not change
    assert "ForEachError" in square["error"]
    assert "'items' returned dict" in square["error"]
    assert "not a list" in square["error"]


def test_for_each_over_an_unknown_task_is_a_validation_error(
    corral: RunCli, write: Callable[..., Path]
) -> None:
    write("jobs.py", JOBS)
    write("p.yml", """
tasks:
  items: {call: "jobs:items"}
  square: {call: "jobs:square", for_each: itemz}
""")
    proc = corral("validate", "p.yml")
    assert proc.returncode == 2
    assert "task 'square' for_each over unknown task 'itemz'" in proc.stderr + proc.stdout
    assert "did you mean 'items'?" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_command_fans_out_with_its_item_in_the_environment(
    corral: RunCli, write: Callable[..., Path], tmp_path: Path
) -> None:
    write("jobs.py", JOBS)
    write("cmds.yml", """
tasks:
  items: {call: "jobs:items"}
  touch: {cmd: 'touch "item-$CORRAL_ITEM"', for_each: items}
""")
    proc = corral("run", "cmds.yml", "--no-store")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.glob("item-*")) == ["item-1", "item-2", "item-3"]

