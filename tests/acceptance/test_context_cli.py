"""corral.context() through the real CLI: `corral show` (text and --json) shows what tasks
wrote, and `corral resume` gives it back to the tasks that run again."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.acceptance.conftest import RunCli

JOBS = """
import os
import corral

def plan():
    corral.context()["steps"] = ["fetch", "sum"]

async def step():
    ctx = corral.context()
    ctx.update_with("tries", lambda n: n + 1, 0)
    if not os.path.exists("fixed"):
        raise RuntimeError("not yet")
    return ctx["steps"]
"""

PIPELINE = """
name: ctx
tasks:
  plan: {call: "jobs:plan"}
  step: {call: "jobs:step", executor: async, depends_on: [plan]}
"""


def test_context_is_shown_and_restored_on_resume(
    corral: RunCli, write: Callable[..., Path], tmp_path: Path
) -> None:
    write("jobs.py", JOBS)
    write("ctx.yml", PIPELINE)
    first = corral("run", "ctx.yml", "--json")
    assert first.returncode == 1, first.stderr  # step failed, after plan wrote the context
    ran = json.loads(first.stdout)
    run_id = ran["run_id"]
    assert ran["context"] == {"steps": ["fetch", "sum"], "tries": 1}
    shown = corral("show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "steps = ['fetch', 'sum']" in shown.stdout
    assert "tries = 1" in shown.stdout

    (tmp_path / "fixed").touch()
    second = corral("resume", run_id, "--json")
    assert second.returncode == 0, second.stderr
    got = json.loads(second.stdout)
    assert got["tasks"]["plan"]["attempts"] == 0  # reused; its context came back from the store
    assert got["context"] == {"steps": ["fetch", "sum"], "tries": 2}
    again = corral("show", got["run_id"], "--json")
    assert json.loads(again.stdout)["context"] == {"steps": ["fetch", "sum"], "tries": 2}
