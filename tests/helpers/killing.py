"""Killing a recorded ``corral`` run with SIGKILL, for the kill-and-resume tests."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
from typing import Any

from tests.helpers.waiting import HANG_GUARD_S, wait_for


def kill_run(proc: subprocess.Popen[str], store: Any) -> str:
    """SIGKILL ``proc`` (corral alone, as kill -9 or the OOM killer would) and wait until the
    store shows its run as crashed (its lease lapsed); return the run's id."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=HANG_GUARD_S)
    killed = store.list_runs(limit=1)[0]
    wait_for(lambda: str(store.get_run(killed.id).observed_status) == "crashed",
             "the killed run's lease to lapse")
    return str(killed.id)


def freeze_succeeded(store: Any, run_id: str, starts: collections.Counter[tuple[str, str]],
                     frozen: dict[str, int]) -> None:
    """Note, for each task the run recorded as succeeded, how often it had started by now:
    it must never start again."""
    for task, stored in store.load_run(run_id).tasks.items():
        if stored.state is not None and str(stored.state) == "succeeded":
            frozen.setdefault(task, starts["start", task])
