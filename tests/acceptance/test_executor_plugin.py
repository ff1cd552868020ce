"""A third-party executor, installed as a package with an entry point, used by a pipeline file.

The package is real as far as Python's import system goes: a module and a ``.dist-info``
folder with ``entry_points.txt`` on ``PYTHONPATH``, found by ``importlib.metadata`` exactly as
a ``pip install``ed one would be."""

from __future__ import annotations

import json
from pathlib import Path

PLUGIN = '''
from corral.executors import Executor
from corral.executors._base import ERROR, OK


class InlineExecutor(Executor):
    """Runs each callable at once, on the run loop, and notes what it ran."""

    name = "inline"

    def submit(self, work):
        with open("inline-ran.txt", "a") as f:
            f.write(work.task_id + "\\n")
        try:
            value = work.fn(*work.args, **work.kwargs)
        except Exception as exc:
            self.sink(work, ERROR, exc)
        else:
            self.sink(work, OK, value)
'''


def install_plugin(site: Path) -> None:
    site.mkdir()
    (site / "corral_inline.py").write_text(PLUGIN)
    info = site / "corral_inline-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: corral-inline\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[corral.executors]\ninline = corral_inline:InlineExecutor\n")


def test_a_pipeline_runs_tasks_on_an_executor_from_an_entry_point(corral, write, tmp_path):
    site = tmp_path / "site"
    install_plugin(site)
    write("jobs.py", """
        def double(x):
            return 2 * x
    """)
    write("pipeline.yml", """
        tasks:
          a: {call: "jobs:double", args: [4], executor: inline}
          b: {call: "jobs:double", args: [1], executor: inline, depends_on: [a]}
          c: {cmd: "true", depends_on: [b]}
    """)
    env = {"PYTHONPATH": f"{tmp_path}:{site}"}
    proc = corral("run", "pipeline.yml", "--json", "--no-store", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {t: r["executor"] for t, r in doc["tasks"].items()} == {
        "a": "inline", "b": "inline", "c": "shell"}
    assert (tmp_path / "inline-ran.txt").read_text().split() == ["a", "b"]


def test_an_unknown_executor_in_a_pipeline_is_exit_2_with_a_suggestion(corral, write, tmp_path):
    site = tmp_path / "site"
    install_plugin(site)
    write("pipeline.yml", """
        tasks:
          a: {call: "jobs:double", executor: inlne}
    """)
    proc = corral("validate", "pipeline.yml", env={"PYTHONPATH": f"{tmp_path}:{site}"})
    assert proc.returncode == 2
    assert "unknown executor 'inlne'" in proc.stdout
    assert "did you mean 'inline'?" in proc.stdout
