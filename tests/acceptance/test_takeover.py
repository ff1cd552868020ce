"""A run killed with ``kill -9`` is taken over at once on the host where it ran: its store
records the owner's process (boot, pid namespace, pid, start time), and a process that is gone
holds no lease. A live owner still holds it. Through the real CLI, SQLite and PostgreSQL.

Tasks append their id to ``executions.txt``, so re-executions are counted, never guessed. No
assertion is timed: with the default 30 s lease, a resume that is not refused (exit 4) did not
wait for the lease.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers.postgres import schema_url
from tests.helpers.waiting import out, wait_for

from corral.cli import ExitCode

HANG_GUARD_S = 60.0


def blocking(task: str) -> str:
    return (
        f'"echo {task} >> executions.txt; touch {task}.started; '
        f'while [ -e {task}.block ]; do sleep 0.05; done"'
    )


CRASHY = f"""
name: crashy
concurrency: 2
tasks:
  a: {{cmd: {blocking("a")}}}
  b: {{cmd: {blocking("b")}, depends_on: [a]}}
  c: {{cmd: {blocking("c")}, depends_on: [b]}}
  d: {{cmd: {blocking("d")}}}
"""


def executions(tmp_path: Path) -> Counter[str]:
    path = tmp_path / "executions.txt"
    return Counter(path.read_text().split()) if path.exists() else Counter()


@pytest.fixture(params=["sqlite", "postgres"])
def store_args(request: pytest.FixtureRequest) -> Iterator[tuple[str, ...]]:
    """``--store`` arguments: none for SQLite (the default), else a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield ()
        return
    with schema_url("corral_cli") as url:
        yield ("--store", url)


def runs(corral, store_args: tuple[str, ...]) -> list[dict]:
    proc = corral("runs", "--json", *store_args)
    assert proc.returncode == 0, out(proc)
    found: list[dict] = json.loads(proc.stdout)
    return found


def killed_run(corral, corral_popen, write, tmp_path: Path,
               store_args: tuple[str, ...]) -> str:
    """A run of CRASHY with its default lease, SIGKILLed while c runs (a, b, d succeeded);
    before the kill, a resume of it is refused: its owner is alive."""
    write("crashy.yaml", CRASHY)
    (tmp_path / "c.block").touch()
    # A lease far longer than the hang guard: only the takeover rule can free the run in time.
    proc = corral_popen("run", "crashy.yaml", "--lease", "600s", *store_args)
    try:
        wait_for(lambda: (tmp_path / "c.started").exists() or proc.poll() is not None,
                 "task c to start")
        assert proc.poll() is None, proc.communicate()
        [run] = runs(corral, store_args)
        assert (run["status"], run["alive"]) == ("running", True)

        def recorded() -> bool:
            shown = corral("show", run["run_id"], "--json", *store_args)
            states = {t: i["state"] for t, i in json.loads(shown.stdout)["tasks"].items()}
            return states == {"a": "succeeded", "b": "succeeded", "c": "running",
                              "d": "succeeded"}

        wait_for(recorded, "the store to show a, b and d succeeded, c running")
        refused = corral("resume", run["run_id"], *store_args)
        assert refused.returncode == ExitCode.RUN_LOCKED, out(refused)
        assert "is held by" in refused.stderr
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == -signal.SIGKILL
    (tmp_path / "c.block").unlink()
    return str(run["run_id"])


@pytest.mark.slow
def test_a_run_killed_with_sigkill_is_resumed_at_once(
    corral, corral_popen, write, tmp_path, store_args
):
    run_id = killed_run(corral, corral_popen, write, tmp_path, store_args)
    before = executions(tmp_path)
    assert before == Counter("abcd")

    # Its process is gone (and its reaper, once it has ended c's command, within
    # milliseconds): the run is crashed now, not when its 600 s lease lapses.
    wait_for(lambda: runs(corral, store_args)[0]["status"] == "crashed", "the run to crash")
    [run] = runs(corral, store_args)
    assert (run["run_id"], run["status"], run["alive"]) == (run_id, "crashed", False)
    assert [r["run_id"] for r in json.loads(
        corral("runs", "--json", "--status", "crashed", *store_args).stdout)] == [run_id]
    assert json.loads(corral("runs", "--json", "--status", "running", *store_args).stdout) == []

    resumed = corral("resume", run_id, "--json", *store_args)
    assert resumed.returncode == 0, out(resumed)
    doc = json.loads(resumed.stdout)
    assert (doc["status"], doc["resumed_from"]) == ("succeeded", run_id)
    assert sorted(doc["reused"]) == ["a", "b", "d"]
    assert executions(tmp_path) == Counter({"a": 1, "b": 1, "d": 1, "c": 2})


@pytest.mark.slow
def test_two_resumers_of_a_dead_run_at_once_one_wins(
    corral, corral_popen, write, tmp_path, store_args
):
    from tests.acceptance.conftest import cli_env, corral_argv

    run_id = killed_run(corral, corral_popen, write, tmp_path, store_args)
    wait_for(lambda: runs(corral, store_args)[0]["status"] == "crashed", "the run to crash")
    procs = [subprocess.Popen(corral_argv("resume", run_id, "--json", *store_args),
                              cwd=tmp_path, env=cli_env(tmp_path), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=HANG_GUARD_S), *p.communicate(timeout=HANG_GUARD_S))
               for p in procs]
    codes = sorted(code for code, _, _ in results)
    # The loser either lost the claim (4) or saw the run already resumed (2).
    assert codes[0] == 0, results
    assert codes[1] in (ExitCode.RUN_LOCKED, ExitCode.INVALID), results
    assert all("Traceback" not in err for _, _, err in results), results
    assert executions(tmp_path) == Counter({"a": 1, "b": 1, "d": 1, "c": 2})


STUBBORN = """
name: stubborn
tasks:
  s: {cmd: "trap '' TERM; echo $$ > s.pid; while true; do sleep 0.05; done"}
"""


@pytest.mark.slow
def test_a_dead_run_is_not_taken_over_while_its_reaper_ends_its_commands(
    corral, corral_popen, write, tmp_path
):
    """A command that ignores SIGTERM outlives corral by the reaper's grace (3 s), until the
    reaper SIGKILLs it and exits. The run is taken over only then: never two of it at once."""
    write("stubborn.yaml", STUBBORN)
    proc = corral_popen("run", "stubborn.yaml", "--lease", "600s")
    pid_file = tmp_path / "s.pid"
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip()
                 or proc.poll() is not None, "the command to start")
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        # wait(), not communicate(): the reaper holds corral's stderr until it exits.
        proc.wait(timeout=HANG_GUARD_S)
    command = int(pid_file.read_text())

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (ProcessLookupError, FileNotFoundError):  # gone, or reaped between the two
            return False
        return stat.rpartition(")")[2].split()[0] != "Z"

    from corral.store import open_store

    with open_store(f"sqlite:///{tmp_path / '.corral' / 'corral.db'}") as store:
        [run] = store.list_runs()
        # The reaper ends the command only after its grace (SIGTERM is ignored): meanwhile the
        # run is held, although corral itself is gone.
        checks = 0
        while alive(command):
            assert store.get_run(run.id).lease_live, "taken over while its command still ran"
            checks += 1
        assert checks, "the command ended before the store could be asked"
        wait_for(lambda: not store.get_run(run.id).lease_live, "the run to be taken over")
