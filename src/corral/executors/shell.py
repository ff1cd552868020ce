"""Shell executor: each attempt is ``/bin/sh -c CMD`` in its own process group.

Output (stdout and stderr, interleaved as the command wrote them) goes straight from the
child to the attempt's log file — no pipe through Python, so a chatty command costs corral
nothing. A non-zero exit fails the attempt with :class:`CommandFailed`, which carries the exit
code, the log path and the log's last lines.

The exception is a task with a ``heartbeat``: its output is its sign of life, so it comes
through a pipe that the run loop reads (:class:`_WatchedOutput`). Each chunk read beats the
attempt and is written on to the log::

    command ──stdout+stderr──> pipe ──run loop reads a chunk──> work.beat()
                                                        └──> attempt's log (if any)

Stopping an attempt (timeout, hang, cancelled run) signals the whole process group: SIGTERM, then
SIGKILL after ``kill_grace`` seconds, so a command's children die with it. :meth:`shutdown`
does the same to anything left, so a run never leaves an orphan behind; and should corral be
killed before it can (``kill -9``, the OOM killer), a :class:`~corral.executors._reaper.Reaper`
process does it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Self

from corral._errors import CommandFailed
from corral.executors._base import CANCELLED, ERROR, OK, Executor, ExecutorSettings, Work
from corral.executors._reaper import Reaper

__all__ = ["ShellExecutor", "tail"]

TAIL_LINES = 20
CHUNK = 65536  # bytes read from a watched command's output at a time


def tail(path: Path | str | None, lines: int = TAIL_LINES, max_bytes: int = 16384) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class ShellExecutor(Executor):
    """Runs shell command lines. ``env`` is added to the inherited environment."""

    name = "shell"
    runs = "commands"
    writes_logs = True

    def __init__(self, *, env: Mapping[str, str] | None = None, kill_grace: float = 3.0) -> None:
        super().__init__()
        self.env = dict(env or {})
        self.kill_grace = kill_grace
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._reaper = Reaper(grace=kill_grace)  # ends our groups if corral is killed

    @classmethod
    def for_run(cls, settings: ExecutorSettings) -> Self:
        return cls(env=settings.env)

    def submit(self, work: Work) -> None:
        task = asyncio.get_running_loop().create_task(self._run(work))
        work.handle = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, work: Work) -> None:
        env = None
        if self.env or work.env:
            env = {**os.environ, **self.env, **(work.env or {})}
        log_path = work.log_path
        proc = None
        watched = None
        try:
            if log_path is not None:
                log_path.parent.mkdir(parents=True, exist_ok=True)
            out: IO[bytes] | int | None = None
            if work.beat is not None:
                watched = _WatchedOutput(log_path, work.beat)
                out = watched.write_fd
            elif log_path is not None:
                out = open(log_path, "ab")  # noqa: SIM115 - handed to the child
            try:
                proc = await asyncio.create_subprocess_exec(
                    "/bin/sh",
                    "-c",
                    str(work.fn),
                    stdin=subprocess.DEVNULL,
                    stdout=out if out is not None else subprocess.DEVNULL,
                    stderr=subprocess.STDOUT,
                    cwd=work.cwd,
                    env=env,
                    start_new_session=True,  # its own process group, killed as one
                )
            finally:
                if watched is not None:
                    watched.child_started()
                elif out is not None and not isinstance(out, int):
                    out.close()
            self._procs[proc.pid] = proc
            self._reaper.watch(proc.pid)
            if self._closing:
                _killpg(proc.pid, signal.SIGKILL)
            code = await proc.wait()
        except asyncio.CancelledError:
            if proc is not None:
                await self._kill(proc)
            self.sink(work, CANCELLED, None)
            return
        except OSError as exc:  # the command could not even start (bad cwd, ...)
            self.sink(work, ERROR, exc)
            return
        finally:
            if proc is not None:
                self._procs.pop(proc.pid, None)
                if proc.returncode is not None:
                    # The shell is gone, but a background child may still hold the group:
                    # end it, and only then tell the reaper it has nothing to do for it.
                    _killpg(proc.pid, signal.SIGKILL)
                    self._reaper.forget(proc.pid)
            if watched is not None:
                watched.close()
        if code == 0:
            self.sink(work, OK, None)
        else:
            path = str(log_path) if log_path else None
            self.sink(work, ERROR, CommandFailed(code, log_path=path, tail=tail(log_path)))

    async def _kill(self, proc: asyncio.subprocess.Process) -> None:
        _killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.kill_grace)
        except TimeoutError:
            pass
        _killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()

    def cancel(self, work: Work) -> None:
        task = work.handle
        if task is not None:
            task.cancel()

    async def shutdown(self) -> None:
        # Whatever still runs was written off by the run loop: SIGKILL every group and wait
        # for each attempt to see its process end (a second cancel would interrupt the waits
        # and leave processes unreaped).
        self._closing = True
        for pid in list(self._procs):
            _killpg(pid, signal.SIGKILL)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._reaper.close()

    def kill_all_now(self) -> None:
        """SIGKILL every process group at once (the second Ctrl-C): no waiting, no orphans."""
        for pid in list(self._procs):
            _killpg(pid, signal.SIGKILL)


class _WatchedOutput:
    """The output of a command with a heartbeat: a pipe the run loop reads, each chunk a sign
    of life, written on to the attempt's log (or dropped when there is none)."""

    def __init__(self, log_path: Path | None, beat: Callable[[], None]) -> None:
        self.beat = beat
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._log: IO[bytes] | None = None
        if log_path is not None:
            self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self._loop: asyncio.AbstractEventLoop | None = None

    def child_started(self) -> None:
        """The child has its copy of the write end: close ours (so the pipe ends when the
        command's processes do) and start reading."""
        os.close(self.write_fd)
        self.write_fd = -1
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.read_fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.read_fd, CHUNK)
        except BlockingIOError:
            return
        if not data:  # every writer is gone
            self._stop_reading()
            return
        self.beat()
        if self._log is not None:
            self._log.write(data)

    def _stop_reading(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.read_fd)
            self._loop = None

    def close(self) -> None:
        """Take what the command left in the pipe, then close the pipe and the log."""
        self._stop_reading()
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1
        try:
            # Bounded: a process that escaped the group could write forever.
            for _ in range(1024):
                data = os.read(self.read_fd, CHUNK)
                if not data:
                    break
                if self._log is not None:
                    self._log.write(data)
        except BlockingIOError:
            pass
        finally:
            os.close(self.read_fd)
            if self._log is not None:
                self._log.close()


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
