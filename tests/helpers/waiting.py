"""Polling with a hang guard, for tests that wait on real processes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest

HANG_GUARD_S = 60.0  # seconds: a hang guard, never an assertion


def wait_for(predicate: Callable[[], object], what: str, timeout: float = HANG_GUARD_S) -> None:
    """Poll until ``predicate()`` holds; fail, as a hang guard, after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"hang guard: still waiting for {what} after {timeout:g}s")
        time.sleep(0.02)


def out(proc: subprocess.CompletedProcess[str]) -> str:
    """Everything a finished process printed, for assertion messages."""
    return proc.stdout + proc.stderr
