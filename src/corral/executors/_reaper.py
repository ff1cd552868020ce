"""A watchdog that ends a run's process groups when corral dies without ending them.

Each shell attempt runs in its own process group, so that stopping it stops its children
too. The price: nothing ties the group to corral, so a ``kill -9`` of corral (or the machine's
OOM killer) used to leave its running commands behind, and a resume would then run them a
second time beside the first. The reaper closes that gap::

    corral ──"+pgid" / "-pgid" lines──> pipe ──> reaper (a small child process)
                                                  on end of file: SIGTERM every group still
                                                  listed, SIGKILL after the grace period

The pipe's write end is corral's alone (not inherited by tasks), so its end of file means
corral is gone, however it went; a corral that ends normally has ended its groups first and
the reaper exits with nothing to do. The reaper runs in a session of its own and ignores
SIGINT, SIGTERM and SIGHUP: a Ctrl-C, a closed terminal or a ``kill -9`` of corral's whole
process group must not take the reaper with it before it has done its job. (A group that
ended as corral was killed, before it could say so, is ended by pgid: a pgid reused within
those milliseconds would be hit. Linux hands out pids in order, so that takes ~4M new
processes in between.)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

__all__ = ["Reaper"]

# Run with ``python -I -S -c``: no site, no corral import, so it starts in milliseconds.
_REAPER_CODE = """
import os, signal, sys, time
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
grace = float(sys.argv[1])
groups = set()
for line in sys.stdin.buffer:
    pgid = int(line[1:])
    if line[:1] == b"+":
        groups.add(pgid)
    else:
        groups.discard(pgid)

def alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False

for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except OSError:
        pass
deadline = time.monotonic() + grace
while groups and time.monotonic() < deadline:
    groups = {g for g in groups if alive(g)}
    time.sleep(0.05)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class Reaper:
    """Started on the first :meth:`watch`; :meth:`close` lets it exit. ``grace`` is how long
    the groups get between SIGTERM and SIGKILL once corral is gone."""

    def __init__(self, *, grace: float = 3.0) -> None:
        self.grace = grace
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None
        self._tried = False

    def watch(self, pgid: int) -> None:
        """Process group ``pgid`` has started: end it if corral dies first."""
        if not self._tried:
            self._tried = True
            self._start()
        self._send(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        """Process group ``pgid`` has ended (and been ended): nothing to do for it any more."""
        if self._fd is not None:
            self._send(f"-{pgid}\n")

    def close(self) -> None:
        """Let the reaper go: end of file, with (normally) no group left to end."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(timeout=self.grace + 5)
            except subprocess.TimeoutExpired:  # pragma: no cover - it only reads and exits
                proc.kill()
                proc.wait()

    def _start(self) -> None:
        read_end, write_end = os.pipe()  # both non-inheritable: tasks never hold the write end
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _REAPER_CODE, str(self.grace)],
                stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,  # a kill of corral's whole process group spares it
            )
        except OSError:
            os.close(write_end)  # no reaper: runs still work, with the old gap
            return
        finally:
            os.close(read_end)
        self._fd = write_end

    def _send(self, line: str) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            os.write(fd, line.encode())
        except OSError:  # the reaper died (someone killed it): carry on without it
            with contextlib.suppress(OSError):
                os.close(fd)
            self._fd = None
