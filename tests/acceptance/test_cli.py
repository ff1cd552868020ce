"""The ``corral`` command line, end to end: the real CLI in a subprocess, on small pipelines.

Nothing here asserts on how long anything took: timeouts and polls are hang guards only.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
from tests.acceptance.conftest import cli_env, corral_argv
from tests.helpers.waiting import out, wait_for

from corral.cli import ExitCode, main

# --------------------------------------------------------------------------- helpers
HANG_GUARD_S = 60.0



def processes_with(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker`` (zombies have none)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry))
    return found



def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in out(proc), out(proc)


def states(doc: dict[str, Any]) -> dict[str, str]:
    return {task: info["state"] for task, info in doc["tasks"].items()}


ANSI = re.compile(r"\x1b[\[\]]")

# a -> b -> d, a -> c -> d, e alone. Estimates: a 2, b 3, c 1, d 4, e 5.
# Critical path a-b-d = 9 s; total work 15 s.
PLANNED = """
name: planned
concurrency: 3
tasks:
  a: {cmd: "true", estimate: 2}
  b: {cmd: "true", depends_on: [a], estimate: 3}
  c: {cmd: "true", depends_on: [a], estimate: 1}
  d: {cmd: "true", depends_on: [b, c], estimate: 4}
  e: {cmd: "true", estimate: 5}
"""


# --------------------------------------------------------------------------- the CLI itself
def test_help_lists_exit_codes(corral):
    proc = corral("--help")
    assert proc.returncode == 0
    for code in ExitCode:
        assert re.search(rf"^\s+{int(code)}\s", proc.stdout, re.M), proc.stdout
    for command in ("validate", "plan", "graph", "run", "schema"):
        assert command in proc.stdout


def test_every_option_has_a_corral_env_var_shown_in_help(corral):
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        assert command is not None
        # Hidden options are not the user's (a pool passes them to its workers).
        options = [p for p in command.params
                   if isinstance(p, click.Option) and p.name != "help" and not p.hidden]
        help_text = corral(name, "--help").stdout
        for option in options:
            assert isinstance(option.envvar, str), (name, option.name)
            assert option.envvar.startswith("CORRAL_"), (name, option.name)
            assert option.show_envvar, (name, option.name)
            assert option.envvar in help_text, (name, option.envvar)


def test_version(corral):
    import corral as corral_pkg

    proc = corral("--version")
    assert proc.returncode == 0
    assert corral_pkg.__version__ in proc.stdout


def test_schema_is_json(corral):
    proc = corral("schema")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert "tasks" in schema["properties"]


# --------------------------------------------------------------------------- validate
def test_validate_ok(corral, write):
    write("p.yaml", PLANNED)
    proc = corral("validate", "p.yaml")
    assert proc.returncode == 0, out(proc)
    assert proc.stdout.strip() == "ok: 5 tasks, 4 edges"


INVALID = """
name: broken
tasks:
  a: {cmd: "true", depends_on: [bb]}
  b:
    cmd: "true"
    retries: "2"
  c: {cmd: "true", depends_on: [c]}
"""


def test_validate_lists_every_problem_with_file_and_line(corral, write):
    write("broken.yaml", INVALID)
    proc = corral("validate", "broken.yaml")
    assert proc.returncode == ExitCode.INVALID
    assert_no_traceback(proc)
    lines = proc.stdout.splitlines()
    assert len(lines) == 3, proc.stdout
    assert lines[0].startswith("broken.yaml:3: ")
    assert "'bb'" in lines[0]
    assert "did you mean 'b'?" in lines[0]
    assert lines[1].startswith("broken.yaml:6: ")
    assert lines[2].startswith("broken.yaml:7: ")


def test_validate_json(corral, write):
    write("broken.yaml", INVALID)
    write("ok.yaml", PLANNED)
    bad = corral("validate", "broken.yaml", "--json")
    assert bad.returncode == ExitCode.INVALID
    doc = json.loads(bad.stdout)
    assert doc["valid"] is False
    assert [p["line"] for p in doc["problems"]] == [3, 6, 7]
    assert {p["file"] for p in doc["problems"]} == {"broken.yaml"}
    good = corral("validate", "ok.yaml", "--json")
    assert good.returncode == 0
    assert json.loads(good.stdout) == {"valid": True, "problems": []}
    missing = corral("validate", "missing.yaml", "--json")
    assert missing.returncode == ExitCode.INVALID
    assert json.loads(missing.stdout)["problems"][0]["file"] == "missing.yaml"


@pytest.mark.parametrize(
    ("args", "files"),
    [
        (["validate", "missing.yaml"], {}),
        (["run", "missing.yaml"], {}),
        (["run", "bad.yaml"], {"bad.yaml": "tasks: {a: {cmd: 'x'}\n  b: [\n"}),
        (["run", "p.yaml", "-p", "no-equals-sign"], {"p.yaml": PLANNED}),
        (["run", "p.yaml", "-p", "undeclared=1"], {"p.yaml": PLANNED}),
        (["run", "p.yaml", "--only", "nope"], {"p.yaml": PLANNED}),
        (["run", "p.yaml", "--concurrency", "0"], {"p.yaml": PLANNED}),
        (["run", "p.yaml", "--concurrency", "many"], {"p.yaml": PLANNED}),
        (["plan", "p.yaml", "--workers", "-1"], {"p.yaml": PLANNED}),
        (["graph", "p.yaml", "--format", "png"], {"p.yaml": PLANNED}),
        (["graph", "p.yaml", "-o", "no/such/dir/g.mmd"], {"p.yaml": PLANNED}),
        (["run", "broken.yaml"], {"broken.yaml": INVALID}),
        (["plan", "broken.yaml"], {"broken.yaml": INVALID}),
    ],
)
def test_invalid_input_exits_2_without_traceback(corral, write, args, files):
    for name, text in files.items():
        write(name, text)
    proc = corral(*args)
    assert proc.returncode == ExitCode.INVALID, out(proc)
    assert_no_traceback(proc)
    assert out(proc).strip(), "the user is told what is wrong"


def test_bad_option_value_from_environment_exits_2(corral, write):
    write("p.yaml", PLANNED)
    proc = corral("run", "p.yaml", "--dry-run", env={"CORRAL_CONCURRENCY": "lots"})
    assert proc.returncode == ExitCode.INVALID
    assert_no_traceback(proc)


# --------------------------------------------------------------------------- plan
def test_plan_json_exact_on_a_known_dag(corral, write):
    write("p.yaml", PLANNED)
    proc = corral("plan", "p.yaml", "--json", "--workers", "1")
    assert proc.returncode == 0, out(proc)
    plan = json.loads(proc.stdout)
    assert plan["levels"] == [["a", "e"], ["b", "c"], ["d"]]
    assert plan["width"] == 2
    assert plan["critical_path"] == ["a", "b", "d"]
    assert plan["critical_path_s"] == 9.0
    assert plan["work_s"] == 15.0
    assert plan["lower_bound_s"] == 15.0  # max(9, 15 / 1)
    assert plan["n_tasks"] == 5
    assert plan["n_edges"] == 4


def test_plan_workers_default_to_the_file_then_the_environment(corral, write):
    write("p.yaml", PLANNED)
    from_file = json.loads(corral("plan", "p.yaml", "--json").stdout)
    assert from_file["workers"] == 3
    assert from_file["lower_bound_s"] == 9.0  # max(9, 15 / 3)
    from_env = json.loads(corral("plan", "p.yaml", "--json",
                                 env={"CORRAL_CONCURRENCY": "2"}).stdout)
    assert (from_env["concurrency"], from_env["workers"]) == (2, 2)
    assert from_env["lower_bound_s"] == 9.0  # max(9, 7.5)
    # --workers, the option's old name, still works
    old_name = json.loads(corral("plan", "p.yaml", "--json", "--workers", "2").stdout)
    assert old_name["concurrency"] == 2
    by_option = json.loads(corral("plan", "p.yaml", "--json", "-c", "1").stdout)
    assert by_option["lower_bound_s"] == 15.0


def test_plan_human_output(corral, write):
    write("p.yaml", PLANNED)
    proc = corral("plan", "p.yaml")
    assert proc.returncode == 0, out(proc)
    assert "a → b → d" in proc.stdout
    assert "9.00s" in proc.stdout
    assert "15.0s" in proc.stdout
    assert "estimates: 5 given (estimate), 0 from history, 0 none" in proc.stdout
    assert ANSI.search(proc.stdout) is None


def test_plan_of_a_wide_dag_is_summarised(corral, write):
    tasks = "\n".join(f"  t{i}: {{cmd: 'true'}}" for i in range(300))
    chain = "\n".join(f"  c{i}: {{cmd: 'true', depends_on: [c{i - 1}]}}" for i in range(1, 40))
    write("wide.yaml", f"name: wide\ntasks:\n{tasks}\n  c0: {{cmd: 'true'}}\n{chain}\n")
    proc = corral("plan", "wide.yaml")
    assert proc.returncode == 0, out(proc)
    assert "t299" not in proc.stdout
    assert "more levels" in proc.stdout
    assert len(proc.stdout.splitlines()) < 60


# --------------------------------------------------------------------------- graph
ODD_IDS = """
name: odd
tasks:
  load.db: {cmd: "true"}
  x-y: {cmd: "true", depends_on: [load.db]}
  has space: {cmd: "true", depends_on: [load.db]}
  'say "hi"': {cmd: "true", depends_on: [x-y, has space]}
  end: {cmd: "true", depends_on: ['say "hi"']}
"""


def test_graph_mermaid(corral, write):
    write("odd.yaml", ODD_IDS)
    proc = corral("graph", "odd.yaml", "--format", "mermaid")
    assert proc.returncode == 0, out(proc)
    text = proc.stdout
    assert "flowchart" in text
    found = re.findall(r'^\s+(n\d+)\["([^"]*)"\]$', text, re.M)
    nodes = {label: node for node, label in found}
    assert set(nodes) == {"load.db", "x-y", "has space", "say #34;hi#34;", "end"}
    edges = set(re.findall(r"^\s+(n\d+) --> (n\d+)$", text, re.M))
    expected = {
        ("load.db", "x-y"),
        ("load.db", "has space"),
        ("x-y", "say #34;hi#34;"),
        ("has space", "say #34;hi#34;"),
        ("say #34;hi#34;", "end"),
    }
    assert edges == {(nodes[a], nodes[b]) for a, b in expected}


def test_graph_dot_to_a_file(corral, write, tmp_path):
    write("odd.yaml", ODD_IDS)
    proc = corral("graph", "odd.yaml", "-f", "dot", "-o", "g.dot")
    assert proc.returncode == 0, out(proc)
    assert proc.stdout == ""
    text = (tmp_path / "g.dot").read_text()
    assert text.startswith('digraph "odd" {')
    for edge in (
        '"load.db" -> "x-y";',
        '"load.db" -> "has space";',
        '"x-y" -> "say \\"hi\\"";',
        '"has space" -> "say \\"hi\\"";',
        '"say \\"hi\\"" -> "end";',
    ):
        assert edge in text, text


# --------------------------------------------------------------------------- run
SUCCESS = """
name: fine
tasks:
  first: {cmd: "echo one > one.txt"}
  second: {cmd: "cat one.txt > two.txt", depends_on: [first]}
  py: {call: "jobs:noisy", depends_on: [first]}
"""

JOBS = """
import sys

def noisy():
    print("task output on stdout")
    print("task output on stderr", file=sys.stderr)
    return 42
"""


def test_run_success_json(corral, write, tmp_path):
    write("fine.yaml", SUCCESS)
    write("jobs.py", JOBS)
    proc = corral("run", "fine.yaml", "--json")
    assert proc.returncode == 0, out(proc)
    doc = json.loads(proc.stdout)  # exactly one JSON document: the task's print went elsewhere
    # ... to the task's own log, both streams, in the order written
    log = (tmp_path / doc["tasks"]["py"]["log"]).read_text()  # relative to the run's cwd
    assert log == "task output on stdout\ntask output on stderr\n"
    assert "task output" not in proc.stderr
    assert {
        "run_id",
        "pipeline",
        "status",
        "started_at",
        "finished_at",
        "duration_s",
        "tasks",
    } <= set(doc)
    assert doc["pipeline"] == "fine"
    assert doc["status"] == "succeeded"
    assert states(doc) == {"first": "succeeded", "second": "succeeded", "py": "succeeded"}
    for info in doc["tasks"].values():
        assert info["attempts"] == 1
        assert info["error"] is None
        assert info["duration_s"] >= 0
    assert (tmp_path / "two.txt").read_text() == "one\n"


def test_run_plain_output_is_one_line_per_task_without_ansi(corral, write):
    write("fine.yaml", SUCCESS)
    write("jobs.py", JOBS)  # its prints go to its log, not between the progress lines
    proc = corral("run", "fine.yaml")
    assert proc.returncode == 0, out(proc)
    assert ANSI.search(proc.stdout) is None
    assert ANSI.search(proc.stderr) is None
    lines = [line.split() for line in proc.stdout.splitlines()]
    finished = [words[:2] for words in lines if words and words[0] == "succeeded"][:3]
    assert sorted(finished) == [
        ["succeeded", "first"],
        ["succeeded", "py"],
        ["succeeded", "second"],
    ]
    assert "critical path" in proc.stdout
    assert "first → " in proc.stdout


FAILING = """
name: failing
concurrency: 2
tasks:
  bad: {cmd: "echo boom-tail-line; exit 3", priority: 10}
  after_bad: {cmd: "touch after_bad.ran", depends_on: [bad]}
  slow: {cmd: "sleep 30.{marker}"}
"""


def test_run_failure_fail_fast_cancels_the_rest(corral, write, tmp_path):
    marker = str(secrets.randbelow(10**6)).zfill(6)
    write("failing.yaml", FAILING.replace("{marker}", marker))
    proc = corral("run", "failing.yaml", "--json")
    assert proc.returncode == ExitCode.TASK_FAILED, out(proc)
    doc = json.loads(proc.stdout)
    assert doc["status"] == "failed"
    assert states(doc) == {"bad": "failed", "after_bad": "upstream_failed", "slow": "cancelled"}
    assert "exited with code 3" in doc["tasks"]["bad"]["error"]
    assert not (tmp_path / "after_bad.ran").exists()
    assert processes_with(f"30.{marker}") == []


KEEP_GOING = """
name: failing
concurrency: 1
tasks:
  bad: {cmd: "echo boom-tail-line; exit 3", priority: 10}
  after_bad: {cmd: "touch after_bad.ran", depends_on: [bad]}
  independent: {cmd: "touch independent.ran"}
  after_independent: {cmd: "true", depends_on: [independent]}
"""


def test_run_failure_fail_fast_never_starts_independent_tasks(corral, write, tmp_path):
    # Concurrency 1 and the failing task first (priority): the others were never started.
    write("failing.yaml", KEEP_GOING)
    proc = corral("run", "failing.yaml", "--json", "--fail-fast")
    assert proc.returncode == ExitCode.TASK_FAILED, out(proc)
    doc = json.loads(proc.stdout)
    assert doc["tasks"]["bad"]["state"] == "failed"
    assert doc["tasks"]["after_bad"]["state"] == "upstream_failed"
    assert doc["tasks"]["independent"]["state"] == "cancelled"
    assert doc["tasks"]["independent"]["attempts"] == 0
    assert not (tmp_path / "independent.ran").exists()


def test_run_keep_going_runs_independent_tasks(corral, write, tmp_path):
    write("failing.yaml", KEEP_GOING)
    proc = corral("run", "failing.yaml", "--keep-going")
    assert proc.returncode == ExitCode.TASK_FAILED, out(proc)
    assert (tmp_path / "independent.ran").exists()
    assert not (tmp_path / "after_bad.ran").exists()
    # The summary shows the failed command's log tail.
    assert "boom-tail-line" in proc.stdout
    assert "exit code 3" in proc.stdout
    json_proc = corral("run", "failing.yaml", "--json", env={"CORRAL_FAIL_FAST": "false"})
    doc = json.loads(json_proc.stdout)
    assert states(doc) == {
        "bad": "failed",
        "after_bad": "upstream_failed",
        "independent": "succeeded",
        "after_independent": "succeeded",
    }


def test_run_log_dir_from_the_environment(corral, write, tmp_path):
    write("failing.yaml", KEEP_GOING)
    proc = corral("run", "failing.yaml", "--json", env={"CORRAL_LOG_DIR": "my-logs"})
    doc = json.loads(proc.stdout)
    log = Path(doc["tasks"]["bad"]["log"])
    assert log.parts[0] == "my-logs"
    assert "boom-tail-line" in (tmp_path / log).read_text()
    assert not (tmp_path / ".corral" / "logs").exists()


CHAIN = """
name: chain
tasks:
  a: {cmd: "touch a.ran"}
  b: {cmd: "touch b.ran", depends_on: [a]}
  c: {cmd: "touch c.ran", depends_on: [b]}
  d: {cmd: "touch d.ran"}
"""


def test_run_only_keeps_the_task_and_its_upstream(corral, write, tmp_path):
    write("chain.yaml", CHAIN)
    proc = corral("run", "chain.yaml", "--only", "b", "--json")
    assert proc.returncode == 0, out(proc)
    assert states(json.loads(proc.stdout)) == {"a": "succeeded", "b": "succeeded"}
    assert sorted(p.name for p in tmp_path.glob("*.ran")) == ["a.ran", "b.ran"]


def test_dry_run_runs_nothing(corral, write, tmp_path):
    write("chain.yaml", CHAIN)
    proc = corral("run", "chain.yaml", "--dry-run")
    assert proc.returncode == 0, out(proc)
    assert list(tmp_path.glob("*.ran")) == []
    assert not (tmp_path / ".corral").exists()
    text = proc.stdout
    positions = [text.index(f"touch {t}.ran") for t in "abc"]
    assert positions == sorted(positions), "in dependency order"
    assert "touch d.ran" in text


def test_dry_run_json(corral, write, tmp_path):
    write("chain.yaml", CHAIN)
    proc = corral("run", "chain.yaml", "--dry-run", "--json", "--only", "c")
    assert proc.returncode == 0, out(proc)
    doc = json.loads(proc.stdout)
    assert [t["id"] for t in doc["tasks"]] == ["a", "b", "c"]
    assert doc["tasks"][2]["command"] == "touch c.ran"
    assert list(tmp_path.glob("*.ran")) == []


@pytest.mark.slow
def test_concurrency_precedence(corral, write):
    write("p.yaml", PLANNED)  # the file says 3

    def width(*args: str, env: dict[str, str] | None = None) -> int:
        proc = corral("run", "p.yaml", "--dry-run", "--json", *args, env=env)
        assert proc.returncode == 0, out(proc)
        return int(json.loads(proc.stdout)["concurrency"])

    assert width() == 3
    assert width(env={"CORRAL_CONCURRENCY": "5"}) == 5
    assert width("--concurrency", "7", env={"CORRAL_CONCURRENCY": "5"}) == 7


PARAMS = """
name: params
params:
  who: world
tasks:
  greet: {cmd: "printf '%s' ${who} > greeting.txt"}
"""


def test_params_are_substituted_literally(corral, write, tmp_path):
    write("params.yaml", PARAMS)
    evil = "x'; touch pwned1; $(touch pwned2) `touch pwned3` \"; touch pwned4 #"
    proc = corral("run", "params.yaml", "-p", f"who={evil}", "--json")
    assert proc.returncode == 0, out(proc)
    assert (tmp_path / "greeting.txt").read_text() == evil
    assert list(tmp_path.glob("pwned*")) == []
    default = corral("run", "params.yaml", "--json")
    assert default.returncode == 0
    assert (tmp_path / "greeting.txt").read_text() == "world"


def test_params_in_dry_run(corral, write):
    write("params.yaml", PARAMS)
    proc = corral("run", "params.yaml", "--dry-run", "-p", "who=a b")
    assert proc.returncode == 0, out(proc)
    assert "printf '%s' 'a b' > greeting.txt" in proc.stdout


def test_run_on_a_terminal_shows_the_live_view_then_the_summary(corral_tty, write, tmp_path):
    write("chain.yaml", CHAIN)
    code, text = corral_tty("run", "chain.yaml")
    assert code == 0, text
    assert "corral run chain" in text  # the live view's header
    assert "4/4" in text
    assert "critical path" in text
    assert ANSI.search(text), "a terminal gets colour"
    assert sorted(p.name for p in tmp_path.glob("*.ran")) == ["a.ran", "b.ran", "c.ran", "d.ran"]


# --------------------------------------------------------------------------- signals
WAITS_FOR_GO = """
name: waits
tasks:
  waits: {cmd: "touch started; while [ ! -e go ]; do sleep 0.05; done"}
  after: {cmd: "touch after.ran", depends_on: [waits]}
"""


def test_a_sigint_ignored_at_start_stays_ignored(write, tmp_path):
    # A background job of a shell without job control (`corral run ... &` in a script) starts
    # with SIGINT ignored, so that a Ctrl-C meant for the foreground does not reach it.
    write("waits.yaml", WAITS_FOR_GO)
    argv = " ".join(shlex.quote(a) for a in corral_argv("run", "waits.yaml", "--json"))
    proc = subprocess.Popen(
        ["sh", "-c", f"trap '' INT; exec {argv}"], cwd=tmp_path, env=cli_env(tmp_path),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        wait_for(lambda: (tmp_path / "started").exists() or proc.poll() is not None,
                 "the task to start")
        os.kill(proc.pid, signal.SIGINT)  # ignored: the run goes on
        (tmp_path / "go").touch()
        stdout, stderr = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["status"] == "succeeded"
    assert (tmp_path / "after.ran").exists()


LONG = """
name: long
tasks:
  long: {cmd: "touch started && sleep 60.{marker}"}
  after: {cmd: "touch after.ran", depends_on: [long]}
"""


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGINT, ExitCode.INTERRUPTED), (signal.SIGTERM, ExitCode.TERMINATED)],
)
def test_signal_stops_the_run_and_its_processes(corral_popen, write, tmp_path, sig, code):
    marker = str(secrets.randbelow(10**6)).zfill(6)
    write("long.yaml", LONG.replace("{marker}", marker))
    proc = corral_popen("run", "long.yaml", "--json")
    wait_for(
        lambda: (tmp_path / "started").exists() or proc.poll() is not None, "the long task to start"
    )
    wait_for(
        lambda: len(processes_with(f"60.{marker}")) > 0 or proc.poll() is not None,
        "the sleep to start",
    )
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    doc = json.loads(stdout)
    assert doc["status"] == "interrupted"
    assert states(doc) == {"long": "cancelled", "after": "cancelled"}
    # The sleep went with the run (polled: the kernel reaps it asynchronously).
    wait_for(lambda: processes_with(f"60.{marker}") == [], "the sleep to be gone")
    assert not (tmp_path / "after.ran").exists()


def test_console_script(write, tmp_path):
    import shutil
    import sys

    script = Path(sys.executable).parent / "corral"
    if not script.exists():
        found = shutil.which("corral")
        if found is None:
            pytest.skip("the corral console script is not installed")
        script = Path(found)
    write("p.yaml", PLANNED)
    proc = subprocess.run(
        [str(script), "validate", "p.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert proc.returncode == 0, out(proc)
    assert proc.stdout.startswith("ok: 5 tasks")
