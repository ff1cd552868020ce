"""A corral killed with SIGKILL takes its running commands with it (the reaper), so that a
resume never runs a task beside the orphan of the run it resumes. On a busy machine (two
spinning processes), where a kill used to land between a command's start and its registration
with the reaper, and leave it running."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from tests.helpers.processes import busy_machine
from tests.helpers.waiting import HANG_GUARD_S, wait_for

LONG = """
name: long
tasks:
  sleeper:
    cmd: >-
      sleep 300 & echo $! > child.tmp; mv child.tmp child.pid;
      echo $$ > shell.tmp; mv shell.tmp shell.pid; wait
"""


@pytest.fixture(scope="module", autouse=True)
def busy():
    with busy_machine(2):
        yield


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, waiting for its reparented parent to reap it, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pids(tmp_path: Path) -> list[int]:
    files = [tmp_path / "shell.pid", tmp_path / "child.pid"]
    return [int(f.read_text()) for f in files] if all(f.exists() for f in files) else []


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_a_killed_corral_takes_its_running_commands_with_it(corral_popen, write, tmp_path,
                                                             attempt):
    write("long.yaml", LONG)
    proc = corral_popen("run", "long.yaml", "--no-store")
    wait_for(lambda: pids(tmp_path) or proc.poll() is not None, "the command to start")
    assert proc.poll() is None, proc.communicate()
    shell, child = pids(tmp_path)
    assert alive(shell)
    assert alive(child)

    os.kill(proc.pid, signal.SIGKILL)  # corral alone, as kill -9 or the OOM killer would
    proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == -signal.SIGKILL
    wait_for(lambda: not alive(shell) and not alive(child), "the dead run's command to end")


def test_a_killed_process_group_spares_the_reaper(corral_popen, write, tmp_path):
    write("long.yaml", LONG)
    proc = corral_popen("run", "long.yaml", "--no-store")
    wait_for(lambda: pids(tmp_path) or proc.poll() is not None, "the command to start")
    assert proc.poll() is None, proc.communicate()
    shell, child = pids(tmp_path)

    os.killpg(proc.pid, signal.SIGKILL)  # corral's whole process group
    proc.communicate(timeout=HANG_GUARD_S)
    wait_for(lambda: not alive(shell) and not alive(child), "the dead run's command to end")
