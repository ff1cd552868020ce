"""`corral run --changed-only`: make-like skipping of up-to-date tasks, across runs, from the
store, decided by the contents of each task's inputs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from tests.acceptance.conftest import RunCli

PIPELINE = """
name: inc
tasks:
  compile:
    cmd: "cat src/*.py > out.txt"
    inputs: ["src/**/*.py"]
    outputs: [out.txt]
  test:
    cmd: "test -f out.txt && echo ran >> test-runs.txt"
    depends_on: [compile]
    inputs: [out.txt]
  docs: {cmd: "true"}
"""


def ran(corral: RunCli, *extra: str) -> list[str]:
    """Run with --changed-only; the tasks that actually ran (attempts > 0)."""
    proc = corral("run", "p.yml", "--changed-only", "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    tasks = json.loads(proc.stdout)["tasks"]
    assert all(t["state"] == "succeeded" for t in tasks.values())
    return sorted(k for k, t in tasks.items() if t["attempts"] > 0)


def test_up_to_date_tasks_are_skipped_until_an_input_or_an_output_changes(
    corral: RunCli, write: Callable[..., Path], tmp_path: Path
) -> None:
    write("p.yml", PIPELINE)
    write("src/a.py", "a = 1\n")
    assert ran(corral) == ["compile", "docs", "test"]  # first run: everything
    # test's input out.txt was made by that run: it differs from what test saw at its start
    assert ran(corral) == ["docs", "test"]
    assert ran(corral) == ["docs"]  # now both are up to date; docs declares no inputs
    write("src/b.py", "b = 2\n")  # a new input file: compile runs, and so does test after it
    assert ran(corral) == ["compile", "docs", "test"]
    # same bytes, new mtime (a fresh checkout): still up to date
    os.utime(tmp_path / "src" / "a.py", (1, 1))
    assert ran(corral) == ["docs", "test"]  # (out.txt was rewritten by the run before)
    assert ran(corral) == ["docs"]
    (tmp_path / "out.txt").unlink()  # an output gone: compile runs again
    assert ran(corral) == ["compile", "docs", "test"]
    # without --changed-only everything runs, recording the same digests: test saw out.txt
    # as it is now (the run before made it), so only docs runs after it
    assert corral("run", "p.yml").returncode == 0
    assert ran(corral) == ["docs"]


def test_a_dry_run_says_what_is_up_to_date(
    corral: RunCli, write: Callable[..., Path]
) -> None:
    write("p.yml", PIPELINE)
    write("src/a.py", "a = 1\n")
    assert ran(corral) == ["compile", "docs", "test"]
    proc = corral("run", "p.yml", "--changed-only", "--dry-run", "--json")
    plan = json.loads(proc.stdout)
    assert plan["up_to_date"] == ["compile"]
    assert [t["id"] for t in plan["tasks"]] == ["docs", "test"]


def test_changed_only_refuses_what_it_cannot_do(
    corral: RunCli, write: Callable[..., Path]
) -> None:
    write("p.yml", PIPELINE)
    for extra in (["--no-store"], ["--resume"]):
        proc = corral("run", "p.yml", "--changed-only", *extra)
        assert proc.returncode == 2, proc.stderr
        assert "--changed-only" in proc.stderr
