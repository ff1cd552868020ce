"""How ``call:`` finds the user's code, through the ``corral`` console script a user types.

The pipeline's directory, its ``python_path:`` entries, ``--path`` / ``CORRAL_PATH`` and
``PYTHONPATH`` are searched, on every executor, whatever the working directory; a user's file
named like a module corral imports cannot break corral; a call that cannot be found is a
validation problem that says where corral looked and what is close.
"""

from __future__ import annotations

import json
import os

import pytest
from tests.acceptance.conftest import cli_env
from tests.helpers.waiting import out

PIPELINE = """
name: calls
tasks:
  on-thread:  {call: "jobs:double", args: [2]}
  on-process: {call: "jobs:double", args: [3], executor: process}
  on-async:   {call: "jobs:later", args: [4]}
  helper:     {call: "jobs:via_helper", executor: process}
"""

JOBS = """
import helper

def double(x):
    return 2 * x

async def later(x):
    return x + 1

def via_helper():
    return helper.VALUE
"""


def values(proc):
    doc = json.loads(proc.stdout)
    assert doc["status"] == "succeeded", out(proc)
    return {t: r["state"] for t, r in doc["tasks"].items()}


@pytest.fixture
def project(write, tmp_path):
    """proj/pipeline.yml with jobs.py and helper.py beside it."""
    write("proj/pipeline.yml", PIPELINE)
    write("proj/jobs.py", JOBS)
    write("proj/helper.py", "VALUE = 'from helper'\n")
    return tmp_path / "proj"


@pytest.mark.parametrize("where", ["pipeline dir", "elsewhere"])
def test_call_finds_the_module_next_to_the_pipeline_on_every_executor(corral, project, where):
    cwd, file = (project, "pipeline.yml") if where == "pipeline dir" else \
        (project.parent, "proj/pipeline.yml")
    proc = corral("run", file, "--json", "--no-store", cwd=cwd)
    assert proc.returncode == 0, out(proc)
    assert values(proc) == dict.fromkeys(
        ["on-thread", "on-process", "on-async", "helper"], "succeeded")


def test_validate_plan_and_graph_find_the_module_too(corral, project):
    for args in (["validate"], ["plan", "--no-store"], ["graph"]):
        proc = corral(*args, "proj/pipeline.yml")
        assert proc.returncode == 0, out(proc)


def test_python_path_entries_are_relative_to_the_pipeline_file(corral, write):
    write("proj/pipeline.yml", """
        name: pp
        python_path: [src, ../shared]
        tasks:
          a: {call: "pkg.tasks:answer", executor: process}
          b: {call: "common:answer"}
        """)
    write("proj/src/pkg/__init__.py", "")
    write("proj/src/pkg/tasks.py", "def answer():\n    return 42\n")
    write("shared/common.py", "def answer():\n    return 43\n")
    proc = corral("run", "proj/pipeline.yml", "--json", "--no-store")
    assert proc.returncode == 0, out(proc)
    assert values(proc) == {"a": "succeeded", "b": "succeeded"}


def test_a_python_path_entry_that_is_not_a_directory_is_a_problem(corral, write):
    write("p.yml", """
        python_path: [nowhere]
        tasks:
          a: {cmd: "true"}
        """)
    proc = corral("validate", "p.yml")
    assert proc.returncode == 2, out(proc)
    assert "p.yml:1: python_path entry 'nowhere' is not a directory" in proc.stdout


def test_path_option_variable_and_pythonpath_are_searched(corral, write, tmp_path):
    write("p.yml", """
        tasks:
          a: {call: "far_a:f"}
          b: {call: "far_b:f", executor: process}
        """)
    write("one/far_a.py", "def f():\n    return 1\n")
    write("two/far_b.py", "def f():\n    return 2\n")
    missing = corral("validate", "p.yml")
    assert missing.returncode == 2, out(missing)
    for args, env in [
        (["--path", "one", "--path", "two"], None),
        ([], {"CORRAL_PATH": f"{tmp_path / 'one'}{os.pathsep}{tmp_path / 'two'}"}),
        ([], {"PYTHONPATH": f"{tmp_path / 'one'}{os.pathsep}{tmp_path / 'two'}"}),
    ]:
        proc = corral("run", "p.yml", "--json", "--no-store", *args, env=env)
        assert proc.returncode == 0, out(proc)
        assert values(proc) == {"a": "succeeded", "b": "succeeded"}


def test_path_must_be_a_directory(corral, write):
    write("p.yml", "tasks:\n  a: {cmd: 'true'}\n")
    proc = corral("validate", "p.yml", "--path", "no-such-dir")
    assert proc.returncode == 2, out(proc)
    assert "no-such-dir" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_user_files_named_like_corrals_imports_cannot_shadow_them(corral, project, write):
    # A yaml.py beside the pipeline, and modules the process worker imports, all broken:
    # corral and its workers still use the real ones (the pipeline's directory comes last).
    for name in ("yaml", "cloudpickle", "select", "click", "rich"):
        write(f"proj/{name}.py", "raise RuntimeError('the user module was imported')\n")
    proc = corral("run", "pipeline.yml", "--json", "--no-store", cwd=project)
    assert proc.returncode == 0, out(proc)
    assert "the user module was imported" not in proc.stdout + proc.stderr


def test_a_module_named_like_an_installed_one_is_reported_as_shadowed(corral, write):
    write("p.yml", "tasks:\n  a: {call: 'json:my_task'}\n")
    write("json.py", "def my_task():\n    return 1\n")
    proc = corral("validate", "p.yml")
    assert proc.returncode == 2, out(proc)
    assert "p.yml:2: task 'a': call 'json:my_task': module 'json'" in proc.stdout
    assert "json.py is not the 'json' imported" in proc.stdout
    assert "rename yours" in proc.stdout


def test_an_unknown_module_says_where_it_looked_and_what_is_close(corral, project):
    (project / "pipeline.yml").write_text(
        "tasks:\n  a: {call: 'jbos:double'}\n  b: {call: 'jobs:dobule'}\n", encoding="utf-8")
    proc = corral("validate", "proj/pipeline.yml")
    assert proc.returncode == 2, out(proc)
    first, second = proc.stdout.splitlines()
    assert first.startswith("proj/pipeline.yml:2: task 'a': cannot import module 'jbos'")
    assert str(project) in first  # among the directories searched
    assert "did you mean 'jobs'?" in first
    assert second.startswith("proj/pipeline.yml:3: task 'b': call 'jobs:dobule': module 'jobs'")
    assert "did you mean 'double'?" in second
    # run validates first: nothing runs, the same problems, exit 2.
    ran = corral("run", "proj/pipeline.yml", "--no-store")
    assert ran.returncode == 2, out(ran)
    assert "did you mean 'jobs'?" in ran.stderr


def test_a_module_in_the_working_directory_only_gets_a_hint(corral, write):
    write("pipelines/p.yml", "tasks:\n  a: {call: 'here:f'}\n")
    write("here.py", "def f():\n    return 1\n")
    proc = corral("validate", "pipelines/p.yml")
    assert proc.returncode == 2, out(proc)
    assert "'here' is in the working directory" in proc.stdout
    assert "--path ." in proc.stdout
    assert corral("validate", "pipelines/p.yml", "--path", ".").returncode == 0


def test_a_module_that_fails_to_import_is_reported_with_its_error(corral, write):
    write("p.yml", "tasks:\n  a: {call: 'broken:f'}\n")
    write("broken.py", "import no_such_dependency_xyz\n\ndef f():\n    pass\n")
    proc = corral("validate", "p.yml")
    assert proc.returncode == 2, out(proc)
    assert ("p.yml:2: task 'a': importing module 'broken' for call 'broken:f' failed: "
            "ModuleNotFoundError: No module named 'no_such_dependency_xyz'") in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_no_import_checks_without_running_module_code(corral, write, tmp_path):
    write("p.yml", "tasks:\n  a: {call: 'loud:f'}\n  b: {call: 'loud:g'}\n")
    write("loud.py", "open('imported.txt', 'w').close()\n\ndef f():\n    pass\n")
    proc = corral("validate", "p.yml", "--no-import")
    assert proc.returncode == 2, out(proc)
    assert "p.yml:3: task 'b': call 'loud:g': module 'loud'" in proc.stdout
    assert not (tmp_path / "imported.txt").exists()
    env = corral("validate", "p.yml", env={"CORRAL_NO_IMPORT": "1"})
    assert env.returncode == 2, out(env)
    assert not (tmp_path / "imported.txt").exists()
    # Importing runs it: documented.
    assert corral("validate", "p.yml").returncode == 2
    assert (tmp_path / "imported.txt").exists()


def test_validate_json_stays_one_document_when_a_module_prints(corral, write):
    write("p.yml", "tasks:\n  a: {call: 'chatty:f'}\n")
    write("chatty.py", "print('hello from import')\n\ndef f():\n    pass\n")
    proc = corral("validate", "p.yml", "--json")
    assert proc.returncode == 0, out(proc)
    assert json.loads(proc.stdout) == {"valid": True, "problems": []}
    assert "hello from import" in proc.stderr


def test_resume_by_id_from_another_directory_finds_the_module(corral, write, tmp_path):
    write("proj/p.yml", """
        name: flaky
        tasks:
          a: {call: "flaky:once", executor: process}
        """)
    write("proj/flaky.py", """
        import os

        def once():
            marker = os.path.join(os.path.dirname(__file__), "tried")
            if not os.path.exists(marker):
                open(marker, "w").close()
                raise RuntimeError("first time fails")
            return "ok"
        """)
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    first = corral("run", "proj/p.yml", "--json", "--store", store)
    assert first.returncode == 1, out(first)
    run_id = json.loads(first.stdout)["run_id"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = corral("resume", run_id, "--json", "--store", store, cwd=elsewhere)
    assert again.returncode == 0, out(again)
    assert json.loads(again.stdout)["tasks"]["a"]["state"] == "succeeded"


def test_cli_env_sets_no_pythonpath(tmp_path):
    # The acceptance tests run the console script as a user would: nothing on the path.
    assert "PYTHONPATH" not in cli_env(tmp_path)
