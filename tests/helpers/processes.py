"""Finding a run's processes, and loading the machine, for the interrupt and kill tests.

Every process a test's corral starts inherits the environment variable ``CORRAL_TEST_MARKER``
(shell commands, process workers, the reaper, and what those start), so that the test can find
every one of them in ``/proc``, whichever process group or parent it ended up with.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

MARKER_VAR = "CORRAL_TEST_MARKER"


def new_marker() -> str:
    return f"corral-test-{secrets.token_hex(6)}"


def marked_processes(marker: str) -> list[tuple[int, int, str]]:
    """``(pid, ppid, command line)`` of each live process (not a zombie) whose environment
    holds ``CORRAL_TEST_MARKER=marker``."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            if needle not in environ.split(b"\0"):
                continue
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        found.append((int(entry), int(fields[1]), cmdline.replace(b"\0", b" ").decode()))
    return found


@contextlib.contextmanager
def busy_machine(n: int = 2) -> Iterator[None]:
    """``n`` processes spinning on the CPU while the block runs (the issue's "loaded machine":
    two busy processes beside corral)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(n)
    ]
    try:
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
