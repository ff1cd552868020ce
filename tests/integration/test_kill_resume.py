"""``kill -9`` of corral at several points of a recorded run, then resume, on every executor and
both stores: every task completes, nothing recorded as succeeded runs again, and nothing from
the killed run is still running when the resume starts (shell commands, process workers and
the subprocesses of their tasks all die with corral).

One chain per executor and store: run, SIGKILL at a point, wait for the lease to lapse, check,
resume, SIGKILL the resume at a later point, ... then a last resume to the end. Tasks append
``start``/``end`` lines to a marker file, so executions are counted, not timed. Everything the
runs start carries a marker in its environment, so ``/proc`` finds it wherever it ended up.
Timeouts are hang guards only.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.helpers.killing import freeze_succeeded, kill_run
from tests.helpers.processes import MARKER_VAR, busy_machine, marked_processes, new_marker
from tests.helpers.waiting import HANG_GUARD_S, wait_for

pytestmark = pytest.mark.slow

JOBS = '''
import asyncio, os, subprocess, time

def _mark(what, name):
    with open("marks.txt", "a") as f:
        f.write(f"{what} {name} {os.getpid()}\\n")

def step(name, seconds=0.4, child=False):
    _mark("start", name)
    if child:  # a subprocess of the task's own: it dies with the task's worker
        subprocess.Popen(["sleep", "300"])
    time.sleep(seconds)
    _mark("end", name)
    return name

async def astep(name, seconds=0.4):
    _mark("start", name)
    await asyncio.sleep(seconds)
    _mark("end", name)
    return name
'''

TASKS = {"a": [], "b": ["a"], "c": ["a"], "d": ["a"], "e": ["b", "c"], "f": ["d", "e"],
         "g": ["f"]}


def pipeline(executor: str) -> str:
    lines = ["name: killme", "concurrency: 2", "tasks:"]
    for task, deps in TASKS.items():
        if executor == "shell":
            action = (f'cmd: "echo start {task} $$ >> marks.txt; sleep 300 & sleep 0.4; '
                      f'echo end {task} $$ >> marks.txt"')
        elif executor == "async":
            action = f"call: killjobs:astep, args: [{task}], executor: async"
        else:
            child = ", kwargs: {child: true}" if executor == "process" else ""
            action = f"call: killjobs:step, args: [{task}]{child}, executor: {executor}"
        lines.append(f"  {task}: {{{action}, depends_on: {deps}}}")
    return "\n".join(lines) + "\n"


def marks(tmp_path: Path) -> collections.Counter[tuple[str, str]]:
    path = tmp_path / "marks.txt"
    text = path.read_text() if path.exists() else ""
    return collections.Counter(tuple(line.split()[:2]) for line in text.splitlines())


def starts(tmp_path: Path) -> int:
    return sum(n for (what, _), n in marks(tmp_path).items() if what == "start")


def ends(tmp_path: Path) -> int:
    return sum(n for (what, _), n in marks(tmp_path).items() if what == "end")


@pytest.fixture(scope="module")
def busy():
    with busy_machine(2):
        yield


@pytest.mark.parametrize("executor", ["shell", "thread", "process", "async"])
def test_killed_at_many_points_then_resumed(busy, store_url, tmp_path, executor):
    from corral.store import open_store

    (tmp_path / "killjobs.py").write_text(textwrap.dedent(JOBS))
    (tmp_path / "killme.yaml").write_text(pipeline(executor))
    marker = new_marker()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update({MARKER_VAR: marker, "PYTHONPATH": os.pathsep.join(
        p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)})
    common = ["--store", store_url, "--lease", "2s", "--log-dir", str(tmp_path / "logs")]

    def corral(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "corral", *args, *common], cwd=tmp_path, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)

    store = open_store(store_url, values_dir=tmp_path / "values")
    # Each kill point: after this many task starts, then after this many ends (cumulative).
    points = [("start", 1), ("end", 3), ("end", 5)]
    frozen: dict[str, int] = {}  # task recorded succeeded -> its starts then: never more
    run_id = None
    try:
        for what, n in points:
            proc = corral("run", "killme.yaml") if run_id is None else corral("resume", run_id)
            reached = (lambda: starts(tmp_path) >= n) if what == "start" else (
                lambda: ends(tmp_path) >= n)
            wait_for(lambda: reached() or proc.poll() is not None, f"{n} task {what}s")
            assert proc.poll() is None, ("the run ended before the kill", proc.communicate())
            run_id = kill_run(proc, store)
            # A resume may start now: nothing of the killed run may still be running.
            assert marked_processes(marker) == []
            freeze_succeeded(store, run_id, marks(tmp_path), frozen)

        done = corral("resume", run_id)
        stdout, stderr = done.communicate(timeout=HANG_GUARD_S * 3)
        assert done.returncode == 0, stdout + stderr
    finally:
        store.close()

    counts = marks(tmp_path)
    assert all(counts["end", task] >= 1 for task in TASKS), counts  # every task completed
    # Nothing recorded as succeeded ran again after it was recorded.
    assert {t: counts["start", t] for t in frozen} == frozen, counts
    assert marked_processes(marker) == []
