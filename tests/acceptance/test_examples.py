"""The examples in examples/ run as the README says: real commands, real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.acceptance.conftest import corral_script

ROOT = Path(__file__).resolve().parents[2]
GUARD = 300  # seconds: a hang guard, never an assertion


def run(args, cwd):
    # As a user runs them: the installed console script and interpreter, no PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("CORRAL_")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=GUARD, check=False)


@pytest.mark.slow
def test_ci_pipeline_runs_green(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    proc = run([corral_script(), "run", "examples/ci.yml", "--json",
                "--no-store", "-p", "version=9.9"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "succeeded"
    assert set(doc["tasks"]) == {"lint", "unit-add", "unit-mean", "docs", "build", "package",
                                 "clean"}
    assert (tmp_path / ".corral/ci/dist/tinycalc-9.9.tar.gz").exists()


def test_example_pipelines_validate(tmp_path):
    for name in ("ci.yml", "resume_demo.yml", "flow_control.yml", "planner.yml",
                 "agents/pipeline.yml"):
        proc = run([corral_script(), "validate", str(ROOT / "examples" / name)],
                   tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_flow_control_example_opens_and_closes_its_breaker(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    proc = run([corral_script(), "run", "examples/flow_control.yml", "--json", "--no-store"],
               tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    tasks = doc["tasks"]
    assert tasks["tool-3"]["error"].startswith("CircuitOpen")
    assert tasks["tool-4"]["state"] == "succeeded"
    assert all(tasks[t]["state"] == "succeeded" for t in tasks if t.startswith("fetch"))
    assert [c["state"] for c in doc["breakers"]] == ["open", "half_open", "closed"]


def test_planner_example_runs_the_steps_its_planner_chose(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    proc = run([corral_script(), "run", "examples/planner.yml", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc["tasks"]) == {"plan", "report", "topics", "shout", "fetch-cats",
                                 "fetch-dogs", "compare", "shout[0]", "shout[1]"}
    assert doc["context"] == {"plan": ["fetch-cats", "fetch-dogs", "compare"],
                              "fetched": ["cats", "dogs"]}
    log = tmp_path / doc["tasks"]["report"]["log"]  # (relative to where corral ran)
    assert "compare: cats have the most legs (4)" in log.read_text()
    shown = run([corral_script(), "show", doc["run_id"]], tmp_path)
    assert "fetch-dogs" in shown.stdout
    assert "plan = ['fetch-cats', 'fetch-dogs', 'compare']" in shown.stdout


def test_agents_example_plans_paces_breaks_and_shares(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    proc = run([corral_script(), "run", "examples/agents/pipeline.yml", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    tasks = doc["tasks"]
    plan = ["research-redis", "summarise-redis", "research-postgres", "summarise-postgres",
            "write"]
    assert set(tasks) == {"stub", "plan", "report", "stop-stub", *plan}
    assert all(t["state"] == "succeeded" for t in tasks.values())
    # the search tool failed its first two calls: the breaker opened, one retry probed it
    assert [c["state"] for c in doc["breakers"]] == ["open", "half_open", "closed"]
    assert sorted(tasks[t]["attempts"] for t in tasks if t.startswith("research")) == [2, 2]
    context = doc["context"]
    assert context["plan"] == plan
    assert set(context["notes"]) == {"redis", "postgres"}
    assert context["answer"].startswith("(editor) Tighten: (writer) compare redis postgres")
    # two summarise tasks and two calls inside write: four model calls; four searches
    assert context["stub_calls"] == {"complete": 4, "search": 4, "search_failed": 2}
    log = tmp_path / tasks["report"]["log"]
    assert "write: (editor)" in log.read_text()
    shown = run([corral_script(), "show", doc["run_id"]], tmp_path)
    assert "stub_calls = {'complete': 4, 'search': 4, 'search_failed': 2}" in shown.stdout


def test_agents_example_plans_from_its_question(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    proc = run([corral_script(), "run", "examples/agents/pipeline.yml", "--json", "--no-store",
                "-p", "question=explain sqlite"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["context"]["plan"] == ["research-sqlite", "write"]
    assert "one file per database" in doc["context"]["answer"]


@pytest.mark.slow
def test_data_pipeline_example(tmp_path):
    proc = run([sys.executable, str(ROOT / "examples" / "data_pipeline.py")], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fetch      succeeded  attempts=3" in proc.stdout
    assert "2000 readings" in proc.stdout


@pytest.mark.slow
def test_cpu_fanout_example_agrees_with_serial(tmp_path):
    # Small, so the test is quick; the speed-up it prints is for people, not asserted here.
    proc = run([sys.executable, str(ROOT / "examples" / "cpu_fanout.py"),
                "--chunks", "4", "--size", "20000"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "7837 primes below 80,000" in proc.stdout  # pi(80,000) = 7,837


def _ran(proc):
    """The tasks that ran and succeeded (skipped and up-to-date tasks did not)."""
    return {k for k, t in json.loads(proc.stdout)["tasks"].items()
            if t["state"] == "succeeded" and t["attempts"]}


@pytest.mark.slow
def test_ci_matrix_pipeline_runs_then_only_what_changed(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    argv = [corral_script(), "run", "examples/ci_matrix.yml", "--changed-only", "--json"]
    first = run(argv, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    tasks = json.loads(first.stdout)["tasks"]
    tests = {t for t in tasks if t.startswith("test[")}
    assert len(tests) == 4
    assert tasks["publish"]["state"] == "skipped"  # publish=no
    assert tasks["tell-someone"]["state"] == "skipped"  # the archive was made
    second = run([*argv, "-p", "publish=yes"], tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _ran(second) == {"publish"}  # the rest is up to date
    module = tmp_path / "examples/ci_project/src/tinycalc/__init__.py"
    module.write_text(module.read_text(encoding="utf-8") + "# changed\n", encoding="utf-8")
    third = run(argv, tmp_path)
    assert third.returncode == 0, third.stdout + third.stderr
    assert _ran(third) == {"lint", "archive", *tests}
