"""Durable runs from the command line: the store behind ``corral run``, the history commands,
and kill-and-resume, against SQLite (the default) and the real PostgreSQL.

Tasks append their id to ``executions.txt``, so re-executions are counted, never guessed. A
task that must be "in flight" when the run is killed waits on a block file. Timeouts and polls
are hang guards only.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from tests.helpers.waiting import out, wait_for

from corral.cli import ExitCode

HANG_GUARD_S = 60.0
POSTGRES_URL = os.environ.get(
    "CORRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)




def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in out(proc), out(proc)


def executions(tmp_path: Path) -> Counter[str]:
    path = tmp_path / "executions.txt"
    return Counter(path.read_text().split()) if path.exists() else Counter()


# --------------------------------------------------------------------------- stores


def _postgres_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc}"
    return None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A store URL whose tables live in a fresh schema (the URL's search_path), dropped after."""
    problem = _postgres_problem()
    if problem is not None:
        if os.environ.get("CORRAL_REQUIRE_SERVICES"):
            pytest.fail(f"{problem} (and CORRAL_REQUIRE_SERVICES is set)")
        pytest.skip(problem)
    import psycopg

    schema = f"corral_cli_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def store_args(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """``--store`` arguments: none for SQLite (the default, .corral/corral.db), else a
    PostgreSQL URL."""
    if request.param == "sqlite":
        return ()
    return ("--store", request.getfixturevalue("postgres_url"))


# --------------------------------------------------------------------------- history

HISTORY = """
name: history
tasks:
  shell: {cmd: "echo hello-from-shell; echo shell >> executions.txt"}
  flaky:
    cmd: >-
      echo attempt-output-$(cat tries 2>/dev/null || echo 0);
      echo x >> tries; test $(wc -l < tries) -ge 2
    retries: 1
    depends_on: [shell]
  py: {call: "jobs:answer", depends_on: [shell]}
  talk: {call: "jobs:talk", depends_on: [shell]}
"""

JOBS = """
def answer():
    return 42

def talk():
    print("said by a thread task")
"""


def test_run_is_recorded_then_listed_shown_and_its_logs_printed(corral, write, store_args):
    write("history.yaml", HISTORY)
    write("jobs.py", JOBS)
    proc = corral("run", "history.yaml", "--json", *store_args)
    assert proc.returncode == 0, out(proc)
    run_id = json.loads(proc.stdout)["run_id"]
    assert f"run {run_id}" in proc.stderr  # printed at the start, for show and resume

    listed = corral("runs", "--json", *store_args)
    assert listed.returncode == 0, out(listed)
    [doc] = json.loads(listed.stdout)
    assert {"run_id", "pipeline", "status", "started_at", "finished_at"} <= set(doc)
    assert (doc["run_id"], doc["pipeline"], doc["status"]) == (run_id, "history", "succeeded")
    assert datetime.fromisoformat(doc["finished_at"]) >= datetime.fromisoformat(doc["started_at"])
    assert json.loads(corral("runs", "--json", "--status", "failed", *store_args).stdout) == []
    assert json.loads(corral("runs", "--json", "--pipeline", "other", *store_args).stdout) == []

    shown = corral("show", run_id, "--json", *store_args)
    assert shown.returncode == 0, out(shown)
    details = json.loads(shown.stdout)
    assert {t: i["state"] for t, i in details["tasks"].items()} == {
        "shell": "succeeded",
        "flaky": "succeeded",
        "py": "succeeded",
        "talk": "succeeded",
    }
    assert [a["state"] for a in details["tasks"]["flaky"]["attempts"]] == [
        "retry_wait",
        "succeeded",
    ]
    assert details["critical_path"][0] == "shell"
    assert details["critical_path"][-1] in {"flaky", "py", "talk"}
    text = corral("show", run_id, *store_args)
    assert text.returncode == 0, out(text)
    assert "critical path: shell →" in text.stdout

    log = corral("logs", run_id, "shell", *store_args)
    assert (log.returncode, log.stdout) == (0, "hello-from-shell\n")
    first = corral("logs", run_id, "flaky", "--attempt", "1", *store_args)
    assert first.stdout == "attempt-output-0\n", out(first)
    last = corral("logs", run_id, "flaky", *store_args)
    assert last.stdout == "attempt-output-x\n", out(last)

    # Thread tasks log what they print too; one that printed nothing says so.
    talked = corral("logs", run_id, "talk", *store_args)
    assert (talked.returncode, talked.stdout) == (0, "said by a thread task\n"), out(talked)
    silent = corral("logs", run_id, "py", *store_args)
    assert (silent.returncode, silent.stdout) == (0, ""), out(silent)
    assert "attempt 1 of task 'py' wrote no output" in silent.stderr

    for args, message in [
        (("flaky", "--attempt", "3"), "attempts 1 to 2, not 3"),
        (("nope",), "has no task 'nope'"),
    ]:
        proc = corral("logs", run_id, *args, *store_args)
        assert proc.returncode == ExitCode.INVALID, out(proc)
        assert message in proc.stderr
        assert_no_traceback(proc)
    unknown = corral("show", "no-such-run", *store_args)
    assert unknown.returncode == ExitCode.INVALID
    assert "no run 'no-such-run'" in unknown.stderr

    kept = corral("prune", "--older-than", "30d", *store_args)
    assert (kept.returncode, kept.stdout.strip()) == (0, "pruned 0 runs")
    pruned = corral("prune", "--older-than", "0s", *store_args)
    assert (pruned.returncode, pruned.stdout.strip()) == (0, "pruned 1 run")
    assert json.loads(corral("runs", "--json", *store_args).stdout) == []


def test_no_store_records_nothing_and_reading_creates_no_store(corral, write, tmp_path):
    write("history.yaml", HISTORY)
    write("jobs.py", JOBS)
    assert corral("runs").stdout.strip() == "no runs"
    assert corral("plan", "history.yaml").returncode == 0
    proc = corral("run", "history.yaml", "--no-store", "--json")
    assert proc.returncode == 0, out(proc)
    assert json.loads(proc.stdout)["store"] is None
    assert not (tmp_path / ".corral" / "corral.db").exists()
    env = corral("run", "history.yaml", env={"CORRAL_NO_STORE": "1"})
    assert env.returncode == 0, out(env)
    assert not (tmp_path / ".corral" / "corral.db").exists()


def test_the_store_location_comes_from_the_option_or_the_environment(corral, write, tmp_path):
    write("history.yaml", HISTORY)
    write("jobs.py", JOBS)
    assert corral("run", "history.yaml", "--store", "mine.db").returncode == 0
    assert corral("run", "history.yaml", env={"CORRAL_STORE": "sqlite:///env.db"}).returncode == 0
    assert (tmp_path / "mine.db").exists()
    assert (tmp_path / "env.db").exists()
    assert not (tmp_path / ".corral" / "corral.db").exists()
    assert len(json.loads(corral("runs", "--json", "--store", "mine.db").stdout)) == 1


# --------------------------------------------------------------------------- store errors


def test_a_store_from_a_newer_corral_is_a_clear_error(corral, write, tmp_path):
    import sqlite3

    write("history.yaml", HISTORY)
    write("jobs.py", JOBS)
    assert corral("run", "history.yaml").returncode == 0
    with sqlite3.connect(tmp_path / ".corral" / "corral.db") as conn:
        conn.execute("INSERT INTO schema_version VALUES (999, 0)")
    for args in (("run", "history.yaml"), ("runs",)):
        proc = corral(*args)
        assert proc.returncode == ExitCode.STORE, out(proc)
        assert "version 999" in proc.stderr
        assert "sqlite:///.corral/corral.db" in proc.stderr  # names the store
        assert_no_traceback(proc)
    assert executions(tmp_path) == Counter({"shell": 1})  # the refused run ran nothing


def test_an_unreachable_postgres_is_a_clear_error(corral, write, tmp_path):
    write("history.yaml", HISTORY)
    write("jobs.py", JOBS)
    url = "postgresql://postgres@127.0.0.1:1/test"
    proc = corral("run", "history.yaml", "--store", url)
    assert proc.returncode == ExitCode.STORE, out(proc)
    assert url in proc.stderr
    assert_no_traceback(proc)
    assert not (tmp_path / "executions.txt").exists()  # refused before running anything


# --------------------------------------------------------------------------- plan history


def seed_history(url: str, pipeline: str, durations: dict[str, list[float]]) -> None:
    """Store one finished run per sample, each task taking the given seconds."""
    from corral._spec import TaskState as S
    from corral.store import RunRecord, StoredStatus, TaskSnapshot, TransitionRecord, open_store

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    tasks = tuple(TaskSnapshot(t, (), "f", "shell") for t in durations)
    n = max(len(d) for d in durations.values())
    with open_store(url) as store:
        for k in range(n):
            run_id = f"seed-{k}"
            store.begin_run(
                RunRecord(
                    id=run_id,
                    pipeline=pipeline,
                    status=StoredStatus.RUNNING,
                    tasks=tasks,
                    params={},
                    started_at=t0,
                    host="h",
                    user="u",
                    pid=1,
                ),
                lease_s=0,
            )
            history = []
            for task, samples in durations.items():
                if k < len(samples):
                    d = samples[k]
                    history += [
                        TransitionRecord(task, S.READY, 0, t0, 0.0),
                        TransitionRecord(task, S.RUNNING, 1, t0, 0.0),
                        TransitionRecord(
                            task, S.SUCCEEDED, 1, t0 + timedelta(seconds=d), d, duration_s=d
                        ),
                    ]
            store.write(
                run_id,
                transitions=history,
                finish=(StoredStatus.SUCCEEDED, t0 + timedelta(minutes=1)),
            )


RANKED = """
name: ranked
tasks:
  quick: {cmd: "echo quick >> executions.txt"}
  slow: {cmd: "echo slow >> executions.txt"}
  estimated: {cmd: "echo estimated >> executions.txt", estimate: 2}
"""


def test_plan_and_priorities_use_the_median_of_earlier_successful_attempts(corral, write, tmp_path):
    write("ranked.yaml", RANKED)
    before = json.loads(corral("plan", "ranked.yaml", "--json", "-w", "1").stdout)
    assert before["history_s"] == {}
    assert before["estimate_sources"] == {"given": 1, "history": 0, "none": 2}
    assert before["critical_path_s"] == 2.0  # the estimate; 1 s for the others
    assert not (tmp_path / ".corral").exists()  # planning creates no store
    # With one worker, the longest expected task starts first; equal ones in file order.
    first = corral("run", "ranked.yaml", "-c", "1", "--no-store")
    assert first.returncode == 0, out(first)
    assert (tmp_path / "executions.txt").read_text().split() == ["estimated", "quick", "slow"]
    assert "x its own lower bound" in first.stdout

    # slow: median of 10, 30, 20 = 20 s; the estimate wins over history.
    seed_history(
        f"sqlite:///{tmp_path / '.corral' / 'corral.db'}",
        "ranked",
        {"quick": [1.0], "slow": [10.0, 30.0, 20.0], "estimated": [50.0]},
    )
    plan = json.loads(corral("plan", "ranked.yaml", "--json", "-w", "1").stdout)
    assert plan["history_s"] == {"quick": 1.0, "slow": 20.0}
    assert plan["estimate_sources"] == {"given": 1, "history": 2, "none": 0}
    human = corral("plan", "ranked.yaml", "-w", "1").stdout
    assert "estimates: 1 given (estimate), 2 from history, 0 none" in human
    assert plan["critical_path"] == ["slow"]
    assert plan["critical_path_s"] == 20.0
    assert plan["work_s"] == 23.0
    ignored = json.loads(corral("plan", "ranked.yaml", "--json", "--no-store").stdout)
    assert ignored["history_s"] == {}

    # The longest expected tail starts first.
    (tmp_path / "executions.txt").unlink()
    assert corral("run", "ranked.yaml", "-c", "1").returncode == 0
    assert (tmp_path / "executions.txt").read_text().split() == ["slow", "estimated", "quick"]


# --------------------------------------------------------------------------- kill and resume


def blocking(task: str) -> str:
    """A task that records its execution, then waits while its block file exists."""
    return (
        f'"echo {task} >> executions.txt; touch {task}.started; '
        f'while [ -e {task}.block ]; do sleep 0.05; done"'
    )


# a -> b -> c -> e, d -> e. Each kill point blocks one task, so that when the run is killed
# the tasks before it have succeeded and it is in flight.
CRASHY = f"""
name: crashy
concurrency: 2
tasks:
  a: {{cmd: {blocking("a")}}}
  b: {{cmd: {blocking("b")}, depends_on: [a]}}
  c: {{cmd: {blocking("c")}, depends_on: [b]}}
  d: {{cmd: {blocking("d")}}}
  e: {{cmd: {blocking("e")}, depends_on: [c, d]}}
"""

# What has succeeded when each kill point's task is in flight.
KILL_POINTS = {"b": {"a", "d"}, "c": {"a", "b", "d"}, "e": {"a", "b", "c", "d"}}


def show(corral, run_id: str, store_args: tuple[str, ...]) -> dict:
    proc = corral("show", run_id, "--json", *store_args)
    assert proc.returncode == 0, out(proc)
    return json.loads(proc.stdout)


def the_only_run(corral, store_args: tuple[str, ...]) -> str | None:
    proc = corral("runs", "--json", *store_args)
    assert proc.returncode == 0, out(proc)
    found = json.loads(proc.stdout)
    return found[0]["run_id"] if found else None


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", sorted(KILL_POINTS))
def test_a_killed_run_resumes_without_redoing_what_succeeded(
    corral, corral_popen, write, tmp_path, store_args, kill_at
):
    write("crashy.yaml", CRASHY)
    (tmp_path / f"{kill_at}.block").touch()
    proc = corral_popen("run", "crashy.yaml", "--lease", "1s", *store_args)
    try:
        wait_for(
            lambda: (tmp_path / f"{kill_at}.started").exists() or proc.poll() is not None,
            f"task {kill_at} to start",
        )
        assert proc.poll() is None, proc.communicate()
        run_id = the_only_run(corral, store_args)
        assert run_id is not None

        def recorded() -> bool:
            states = {t: i["state"] for t, i in show(corral, run_id, store_args)["tasks"].items()}
            done = {t for t, s in states.items() if s == "succeeded"}
            return done == KILL_POINTS[kill_at] and states[kill_at] == "running"

        wait_for(recorded, f"the store to show {sorted(KILL_POINTS[kill_at])} succeeded")
        # A live run cannot be resumed from elsewhere.
        refused = corral("resume", run_id, *store_args)
        assert refused.returncode == ExitCode.RUN_LOCKED, out(refused)
        assert "is held by" in refused.stderr
        assert_no_traceback(refused)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # corral and its process group
        proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == -signal.SIGKILL
    (tmp_path / f"{kill_at}.block").unlink()
    before = executions(tmp_path)
    assert set(before) == KILL_POINTS[kill_at] | {kill_at}
    assert all(n == 1 for n in before.values())

    def lapsed() -> bool:
        [run] = json.loads(corral("runs", "--json", *store_args).stdout)
        return run["status"] == "crashed"

    wait_for(lapsed, "the dead run's lease to lapse")
    plan = corral("run", "crashy.yaml", "--resume", "--dry-run", *store_args)
    assert plan.returncode == 0, out(plan)
    assert f"{kill_at}  was running" in plan.stdout

    resumed = corral("run", "crashy.yaml", "--resume", "--json", *store_args)
    assert resumed.returncode == 0, out(resumed)
    doc = json.loads(resumed.stdout)
    assert doc["status"] == "succeeded"
    assert doc["resumed_from"] == run_id
    assert sorted(doc["reused"]) == sorted(KILL_POINTS[kill_at])

    after = executions(tmp_path)
    assert set(after) == set("abcde")
    for task, n in after.items():  # what had succeeded did not run again
        assert n == (1 if task in KILL_POINTS[kill_at] else 1 + before[task]), after

    new = show(corral, doc["run_id"], store_args)
    assert {i["state"] for i in new["tasks"].values()} == {"succeeded"}
    assert sorted(t for t, i in new["tasks"].items() if i["reused"]) == sorted(KILL_POINTS[kill_at])
    assert all(not i["attempts"] for t, i in new["tasks"].items() if i["reused"])
    old = show(corral, run_id, store_args)
    assert (old["status"], old["resumed_by"]) == ("crashed", doc["run_id"])
    assert old["tasks"][kill_at]["state"] == "running"  # as it was when it died
    again = corral("resume", run_id, *store_args)
    assert again.returncode == ExitCode.INVALID
    assert "already resumed" in again.stderr


CHANGING = """
name: changing
tasks:
  a: {cmd: "echo a >> executions.txt"}
  b: {cmd: "echo b >> executions.txt; echo VERSION", depends_on: [a]}
  c: {cmd: "echo c >> executions.txt", depends_on: [b]}
  d: {cmd: "echo d >> executions.txt"}
  e: {cmd: "echo e >> executions.txt; test -e fixed"}
"""


def test_a_changed_definition_reruns_it_and_everything_downstream(
    corral, write, tmp_path, store_args
):
    write("changing.yaml", CHANGING.replace("VERSION", "one"))
    first = corral("run", "changing.yaml", "--keep-going", "--json", *store_args)
    assert first.returncode == ExitCode.TASK_FAILED, out(first)
    run_id = json.loads(first.stdout)["run_id"]

    write("changing.yaml", CHANGING.replace("VERSION", "two"))  # b's command changed
    (tmp_path / "fixed").touch()
    dry = corral("resume", run_id, "--dry-run", *store_args)
    assert dry.returncode == 0, out(dry)
    assert "b  definition changed" in dry.stdout
    assert "c  upstream b re-runs" in dry.stdout
    assert "e  failed" in dry.stdout
    assert dry.stdout.index("would reuse") < dry.stdout.index("  a\n")
    dry_json = json.loads(corral("resume", run_id, "--dry-run", "--json", *store_args).stdout)
    assert dry_json["rerun"] == {
        "b": "definition changed",
        "c": "upstream b re-runs",
        "e": "failed",
    }
    assert dry_json["reuse"] == ["a", "d"]
    assert executions(tmp_path) == Counter("abcde")  # a dry run runs nothing

    resumed = corral("resume", run_id, "--json", *store_args)
    assert resumed.returncode == 0, out(resumed)
    doc = json.loads(resumed.stdout)
    assert doc["status"] == "succeeded"
    assert sorted(doc["reused"]) == ["a", "d"]
    assert executions(tmp_path) == Counter({"a": 1, "d": 1, "b": 2, "c": 2, "e": 2})
    assert corral("logs", doc["run_id"], "b", *store_args).stdout.endswith("two\n")


def test_resume_takes_the_same_options_as_run(corral, write, tmp_path):
    write("changing.yaml", CHANGING.replace("VERSION", "one"))
    first = corral("run", "changing.yaml", "--json")
    run_id = json.loads(first.stdout)["run_id"]
    (tmp_path / "fixed").touch()
    dry = corral("resume", run_id, "--dry-run", "--json", env={"CORRAL_CONCURRENCY": "5"})
    assert json.loads(dry.stdout)["concurrency"] == 5
    proc = corral("resume", run_id, "-c", "3", "--log-dir", "elsewhere", "--json")
    assert proc.returncode == 0, out(proc)
    doc = json.loads(proc.stdout)
    assert Path(doc["tasks"]["e"]["log"]).parts[0] == "elsewhere"
    nothing = corral("run", "changing.yaml", "--resume")  # nothing left unfinished: a new run
    assert nothing.returncode == 0, out(nothing)
    assert "no unfinished run of changing" in nothing.stderr
    assert corral("resume", run_id, "--no-store").returncode == ExitCode.INVALID


def test_runs_prints_a_header_row_over_aligned_columns(corral, write):
    write("p.yaml", "name: headed\ntasks:\n  a: {cmd: 'true'}\n")
    assert corral("run", "p.yaml").returncode == 0
    proc = corral("runs")
    assert proc.returncode == 0, out(proc)
    header, row = proc.stdout.splitlines()
    assert header.split() == ["RUN", "PIPELINE", "STATUS", "STARTED", "DURATION"]
    # Each heading starts where its column does.
    for heading, value in [("PIPELINE", "headed"), ("STATUS", "succeeded")]:
        assert header.index(heading) == row.index(value), proc.stdout
    assert header.rstrip().endswith("DURATION")
    assert len(header.rstrip()) == len(row.rstrip())  # the duration is right-aligned under it
