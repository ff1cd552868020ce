"""``corral test``'s serial path: the run pytest's own loop ran, stored as a run of the
suite, and read back as the next run reads it (a real SQLite store in tmp_path)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.store import open_store
from corral.testrun._outcomes import Outcomes
from corral.testrun._serial import record_run
from corral.testrun._suite import read_history


def report(nodeid: str, when: str, outcome: str, duration: float) -> pytest.TestReport:
    return pytest.TestReport(nodeid, ("t.py", 1, nodeid), {}, outcome, None, when,
                             duration=duration)


def test_a_recorded_session_gives_the_next_run_its_durations_and_failures(
        tmp_path: Path) -> None:
    outcomes = Outcomes()
    for nodeid, outcome in (("t.py::ok", "passed"), ("t.py::bad", "failed"),
                            ("t.py::skip", "skipped")):
        outcomes.record(report(nodeid, "setup", "passed", 0.25))
        outcomes.record(report(nodeid, "call", outcome, 1.0))
        outcomes.record(report(nodeid, "teardown", "passed", 0.25))
    ids = ["t.py::ok", "t.py::bad", "t.py::skip", "t.py::never_ran"]
    with open_store(f"sqlite:///{tmp_path / 'corral.db'}") as store:
        run_id = record_run(store, name="pytest:/suite", nodeids=ids, outcomes=outcomes,
                            started_at=datetime.now(UTC), interrupted=False)
        history = read_history(store, "pytest:/suite", ids)
        stored = store.load_run(run_id)  # the history passes the state machine's check
        run = store.get_run(run_id)
    assert history.failed == {"t.py::bad"}
    assert history.durations == {"t.py::ok": 1.5}
    assert history.setups == {"t.py::ok": 0.25}
    assert str(run.status) == "failed"
    states = {task: str(t.state) for task, t in stored.tasks.items()}
    assert states == {"t.py::ok": "succeeded", "t.py::bad": "failed", "t.py::skip": "skipped",
                      "t.py::never_ran": "None"}  # pending: -x or Ctrl-C stopped the run
