"""`corral run --junit-xml / --report` and GitHub Actions annotations, through the real CLI.

A CI job reads these files: they must parse, count what the run did, and point at the lines
that defined the failed tasks.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from tests.acceptance.conftest import RunCli

PIPELINE = r"""
name: ci
concurrency: 3
tasks:
  lint:
    cmd: "echo linting"
  test:
    cmd: |
      printf 'bad <thing> & \001 here\n'; echo failing >&2; exit 3
    retries: 1
    retry_delay: 0.01
  docs:
    cmd: "true"
  build:
    cmd: "echo build"
    depends_on: [lint, test]
"""


def test_junit_xml_has_one_case_per_task_with_failures_and_skips(
    corral: RunCli, write: Callable[..., Path], tmp_path: Path
) -> None:
    write("p.yml", PIPELINE)
    proc = corral("run", "p.yml", "--keep-going", "--junit-xml", "out/junit.xml")
    assert proc.returncode == 1, proc.stderr
    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()  # parses: no control chars
    assert root.tag == "testsuites"
    (suite,) = root
    assert suite.get("name") == "ci"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {"lint", "test", "docs", "build"}
    assert cases["test"].get("file") == "p.yml"
    assert cases["test"].get("line") == "6"
    failure = cases["test"].find("failure")
    assert failure is not None
    assert "exited with code 3" in (failure.get("message") or "")
    assert failure.text is not None
    assert "failing" in failure.text
    assert "<thing>" in failure.text
    skipped = cases["build"].find("skipped")
    assert skipped is not None
    assert "upstream failed" in (skipped.get("message") or "")
    assert cases["lint"].find("failure") is None
    assert cases["lint"].find("skipped") is None
    assert float(cases["lint"].get("time") or "nan") >= 0


def test_reports_in_markdown_and_json(
    corral: RunCli, write: Callable[..., Path], tmp_path: Path
) -> None:
    write("p.yml", PIPELINE)
    proc = corral("run", "p.yml", "--keep-going", "--report", "md", "r.md",
                  "--report", "json", "r.json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "failed"
    assert report["counts"] == {"succeeded": 2, "failed": 1, "upstream_failed": 1}
    assert report["retried"] == ["test"]
    assert [f["id"] for f in report["failures"]] == ["test"]
    assert "failing" in report["failures"][0]["log_tail"]
    assert 1 <= report["parallelism"]["peak"] <= 3
    by_id = {t["id"]: t for t in report["tasks"]}
    assert by_id["test"]["attempts"] == 2
    assert by_id["test"]["line"] == 6
    assert by_id["build"]["start_s"] is None  # never ran
    markdown = (tmp_path / "r.md").read_text()
    assert markdown.startswith("## ❌ ci: failed")
    assert "| test | failed | 2 |" in markdown
    assert "**Retried:** test" in markdown


def test_github_annotations_only_under_github_actions(
    corral: RunCli, write: Callable[..., Path]
) -> None:
    write("p.yml", PIPELINE)
    plain = corral("run", "p.yml", "--keep-going", env={"GITHUB_ACTIONS": ""})
    assert "::error" not in plain.stdout + plain.stderr
    actions = corral("run", "p.yml", "--keep-going", env={"GITHUB_ACTIONS": "true"})
    lines = [line for line in actions.stdout.splitlines() if line.startswith("::error")]
    assert len(lines) == 1, actions.stdout
    assert lines[0].startswith("::error file=p.yml,line=6,title=corral%3A task test failed::")
    assert "%0A" in lines[0]
    assert "\n" not in lines[0]
    # --json keeps stdout one JSON document: the annotations go to stderr
    as_json = corral("run", "p.yml", "--keep-going", "--json", env={"GITHUB_ACTIONS": "true"})
    assert json.loads(as_json.stdout)["status"] == "failed"
    assert "::error file=p.yml" in as_json.stderr


def test_a_report_that_cannot_be_written_says_so_after_the_run(
    corral: RunCli, write: Callable[..., Path], tmp_path: Path
) -> None:
    write("p.yml", "tasks:\n  a: {cmd: 'true'}\n")
    (tmp_path / "blocker").write_text("a file where a directory should be")
    proc = corral("run", "p.yml", "--junit-xml", "blocker/junit.xml")
    assert proc.returncode == 2
    assert "report could not be written" in proc.stderr
    assert "Traceback" not in proc.stderr
    shown = corral("runs", "--json")
    assert json.loads(shown.stdout)[0]["status"] == "succeeded"  # the run itself is recorded
