"""A suite too small for workers: pytest's own run loop, in this process, recorded after.

When ``--workers auto`` finds that one process finishes soonest
(:func:`~._suite.choose_workers`), the controller leaves the run to pytest's own
``runtestloop``: one collection, pytest's order, pytest's setup and teardown, no run loop and
no threads, so the results and the cost are plain pytest's. What ``corral test`` adds is
before and after it:

- before, :func:`failed_first` moves the tests that failed last time to the front
  (``--failed-first``; ``--last-failed`` has deselected the rest already);
- after, :func:`record_run` stores the session as one run of the suite, as the worker path
  does (one task per test, a passed test's value ``[seconds, setup seconds]``), so that the
  next run's estimates and ``--last-failed`` read it like any other run, and ``corral runs``
  lists it::

    pytest's runtestloop ──reports──> Outcomes ──(session finish)──> record_run ──> store
                                                   begin_run + one write: the transitions
                                                   (ready, running, outcome), values, end

The tests of the record run one after another from the session's start, each for what pytest
measured of it. Tests that never ran (``-x``, Ctrl-C) stay pending in it.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import secrets
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from corral.testrun._outcomes import Outcomes

if TYPE_CHECKING:
    from corral.store import Store

__all__ = ["FINGERPRINT", "failed_first", "has_corral_marks", "record_run"]

# Every test task's definition fingerprint: the worker path's tasks have one action (the
# ``pytest`` executor runs the node id), and a test run is never resumed, which is all that a
# fingerprint is compared for.
FINGERPRINT = "v2:" + hashlib.sha256(b"corral.testrun:pytest").hexdigest()[:16]
# The lease the run holds while it is being written (two transactions, at once).
LEASE_S = 30.0


def has_corral_marks(items: Sequence[pytest.Item]) -> bool:
    """Whether a test asks for ``@pytest.mark.corral``'s ordering or resources: then the run
    goes through corral's scheduler, which honours (and checks) them."""
    return any(item.get_closest_marker("corral") is not None for item in items)


def failed_first(items: list[pytest.Item], failed: set[str]) -> None:
    """``--failed-first``: the tests in ``failed`` first, each part in pytest's order."""
    items[:] = ([item for item in items if item.nodeid in failed]
                + [item for item in items if item.nodeid not in failed])


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return str(os.getuid())


def record_run(store: Store, *, name: str, nodeids: Sequence[str], outcomes: Outcomes,
               started_at: datetime, interrupted: bool) -> str:
    """Store the session as a finished run of the suite ``name``; its id."""
    from corral._spec import TaskState
    from corral.store._owner import current_process
    from corral.store._records import (
        EventRecord,
        RunRecord,
        StoredStatus,
        TaskSnapshot,
        dag_hash,
    )

    tasks = tuple(TaskSnapshot(n, (), FINGERPRINT, "pytest") for n in nodeids)
    # The format of corral._runner.new_run_id: sortable by start time.
    run_id = f"{started_at:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    host, user, pid = socket.gethostname(), _user(), os.getpid()
    owner = f"{user}@{host}:{pid}"
    store.begin_run(RunRecord(
        id=run_id, pipeline=name, status=StoredStatus.RUNNING, tasks=tasks, params={},
        started_at=started_at, host=host, user=user, pid=pid, dag_hash=dag_hash(tasks),
        lease_owner=owner, owner_process=current_process(),
    ), lease_s=LEASE_S, events=[EventRecord("run_started", started_at, data={
        "concurrency": 1, "fail_fast": False, "log_dir": None, "resumed_from": None,
        "reused": [], "owner": owner})])
    transitions: list[list[Any]] = []
    values: list[tuple[str, Any]] = []
    counts: dict[str, int] = {}
    clock = 0.0
    for nodeid in nodeids:
        if nodeid not in outcomes.seconds:
            continue  # never ran
        seconds = outcomes.seconds[nodeid]
        if nodeid in outcomes.failed:
            end: list[Any] = [nodeid, TaskState.FAILED, 1, clock + seconds, seconds,
                              f"TestFailed: {nodeid}"]
        elif nodeid in outcomes.skipped:
            end = [nodeid, TaskState.SKIPPED, 1, clock + seconds, seconds]
        else:
            end = [nodeid, TaskState.SUCCEEDED, 1, clock + seconds, seconds]
            values.append((nodeid, outcomes.value(nodeid)))
        transitions += [[nodeid, TaskState.READY, 0, 0.0], [nodeid, TaskState.RUNNING, 1, clock],
                        end]
        counts[str(end[1])] = counts.get(str(end[1]), 0) + 1
        clock += seconds
    status = (StoredStatus.INTERRUPTED if interrupted
              else StoredStatus.FAILED if outcomes.failed else StoredStatus.SUCCEEDED)
    finished_at = datetime.now(UTC)
    store.write(run_id, transitions=transitions, values=values, events=[EventRecord(
        "run_finished", finished_at, data={"status": str(status), "counts": counts,
                                           "signal": None, "critical_path": []})],
        finish=(status, finished_at))
    return run_id
