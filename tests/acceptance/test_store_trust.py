"""What the CLI does with a store it cannot trust: a row written by something else (a crafted
pickle, garbage) is never executed, and is a clear exit 3, never a traceback.

Whoever can write to a shared store (a PostgreSQL role of a CI system, a copied SQLite file)
must not be able to run code in the corral processes that read it. The payload here writes a
marker file when unpickled: its absence proves nothing was executed.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.helpers.waiting import out

from corral.cli import ExitCode

PIPELINE = """
name: trust
tasks:
  a: {cmd: "echo a >> executions.txt"}
  b: {cmd: "echo b >> executions.txt; test -e fixed", depends_on: [a]}
"""


class Payload:
    """Unpickled, it runs a shell command: what an attacker would plant in a row."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


def crafted(marker: Path) -> bytes:
    return pickle.dumps([Payload(marker)])


def inject(db: Path, run_id: str, *, transitions: object, durations: object = None,
           task_values: object = None) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO batches (run_id, worker, transitions, durations, task_values) "
                     "VALUES (?, NULL, ?, ?, ?)", (run_id, transitions, durations, task_values))


def executions(tmp_path: Path) -> Counter[str]:
    return Counter((tmp_path / "executions.txt").read_text().split())


def failed_run(corral: Callable[..., object], write: Callable[..., Path]) -> str:
    write("trust.yaml", PIPELINE)
    first = corral("run", "trust.yaml", "--json")
    assert first.returncode == ExitCode.TASK_FAILED, out(first)
    run_id: str = json.loads(first.stdout)["run_id"]
    return run_id


@pytest.mark.parametrize("column", ["transitions", "durations", "task_values"])
def test_a_crafted_pickle_in_the_history_is_never_executed(corral, write, tmp_path, column):
    run_id = failed_run(corral, write)
    marker = tmp_path / "pwned"
    db = tmp_path / ".corral" / "corral.db"
    evil = crafted(marker)
    if column == "transitions":
        inject(db, run_id, transitions=evil)
    elif column == "durations":
        inject(db, run_id, transitions=b"[]", durations=evil)
    else:
        inject(db, run_id, transitions=b"[]", task_values=evil)
    (tmp_path / "fixed").touch()

    # What each command reads: the history (show, logs, resume), the durations of earlier
    # attempts (run, resume: for priorities; plan: a warning only), the run records (runs).
    reads_history = column != "durations"
    expected = {
        ("show", run_id): reads_history,
        ("show", run_id, "--json"): reads_history,
        ("logs", run_id): reads_history,
        ("resume", run_id): True,
        ("run", "trust.yaml", "--resume"): True,
        ("run", "trust.yaml"): not reads_history,
        ("plan", "trust.yaml"): False,
        ("runs",): False,
    }
    if column == "durations":
        # Durations only rank tasks: damaged ones are ignored with a warning (never a crash),
        # and every command goes on, the payload never run.
        expected = dict.fromkeys(expected, False)
    for args, refused in expected.items():
        proc = corral(*args)
        assert not marker.exists(), f"corral {' '.join(args)} executed the payload"
        assert "Traceback" not in out(proc), out(proc)
        if refused:
            assert proc.returncode == ExitCode.STORE, (args, out(proc))
            assert f"corrupt history: run '{run_id}'" in proc.stderr, out(proc)
        else:
            assert proc.returncode == 0, (args, out(proc))
            if column == "durations" and args[0] in ("run", "resume"):
                assert "corrupt history" in proc.stderr, (args, out(proc))  # the warning
    if column != "durations":
        assert executions(tmp_path)["a"] == 1 + reads_history  # only a new run ran, if any


def test_a_garbage_history_row_is_exit_3_naming_the_run(corral, write, tmp_path):
    run_id = failed_run(corral, write)
    inject(tmp_path / ".corral" / "corral.db", run_id, transitions=b"\x00not a history\xff")
    for args in (("show", run_id), ("resume", run_id), ("logs", run_id, "a")):
        proc = corral(*args)
        assert proc.returncode == ExitCode.STORE, out(proc)
        assert "Traceback" not in out(proc), out(proc)
        assert run_id in proc.stderr
        assert "corrupt" in proc.stderr
