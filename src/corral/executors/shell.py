"""Shell executor: each attempt is ``/bin/sh -c CMD`` in its own process group.

Commands are started by the run's *reaper* (:mod:`._reaper`), a small process that is their
parent: corral sends it the command, it starts ``/bin/sh`` with ``posix_spawn`` in a new session and
reports the pid, then the exit status. So starting a command costs corral one small message and
no ``fork`` (its cost does not grow with corral's heap, under asyncio or uvloop alike, and it
happens on another core), waiting costs no thread, and a group exists nowhere that the reaper
does not know of it, whatever happens to corral::

    submit ──spawn message──> reaper ──posix_spawn──> /bin/sh -c CMD ──> attempt's log
       sink <── exit status ──┘ (at the shell's exit it SIGKILLs what is left of the group)

Output (stdout and stderr, interleaved as the command wrote them) goes straight from the
command to the attempt's log file — no pipe through Python, so a chatty command costs corral
nothing. A non-zero exit fails the attempt with :class:`CommandFailed`, which carries the exit
code, the log path and the log's last lines; a command that cannot start (a missing ``cwd``)
fails with the ``OSError`` that says why.

The exception is a task with a ``heartbeat``: its output is its sign of life, so it comes
through a pipe that the run loop reads (:class:`_WatchedOutput`; the pipe's write end travels
to the reaper with the spawn message). Each chunk read beats the attempt and is written on to
the log::

    command ──stdout+stderr──> pipe ──run loop reads a chunk──> work.beat()
                                                        └──> attempt's log (if any)

Stopping an attempt (timeout, hang, cancelled run, :meth:`shutdown`) signals the whole process
group: SIGTERM, then SIGKILL after ``kill_grace`` seconds, so a command's children die with it.
:meth:`kill_all_now` (a second Ctrl-C) SIGKILLs every group at once. Should corral be killed
before it can end its groups (``kill -9``, the OOM killer), the reaper does it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Self

from corral._errors import BrokenExecutor, CommandFailed
from corral.executors._base import CANCELLED, ERROR, OK, Executor, ExecutorSettings, Work
from corral.executors._reaper import Reaper, ReaperLost

__all__ = ["ShellExecutor", "tail"]

TAIL_LINES = 20
CHUNK = 65536  # bytes read from a watched command's output at a time
# Seconds, beyond the kill grace, that shutdown waits for the reaper to report every stopped
# command ended (a hang guard: it reports within milliseconds of the SIGKILL).
_SHUTDOWN_GUARD = 10.0


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


class _Attempt:
    __slots__ = ("pid", "stopping", "watched", "work")

    def __init__(self, work: Work, watched: _WatchedOutput | None) -> None:
        self.work = work
        self.watched = watched
        self.pid: int | None = None  # known once the reaper says it started
        self.stopping = False  # cancelled: its group is being ended


class ShellExecutor(Executor):
    """Runs shell command lines. ``env`` is added to the inherited environment; ``kill_grace``
    is the time between SIGTERM and SIGKILL when an attempt is stopped."""

    name = "shell"
    runs = "commands"
    writes_logs = True

    def __init__(self, *, env: Mapping[str, str] | None = None, kill_grace: float = 3.0) -> None:
        super().__init__()
        self.env = dict(env or {})
        self.kill_grace = kill_grace
        self._reaper = Reaper(grace=kill_grace)
        self._attempts: dict[int, _Attempt] = {}
        self._next_key = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._all_ended: asyncio.Future[None] | None = None  # shutdown waits on it

    async def start(self, sink: Any) -> None:
        await super().start(sink)
        self._loop = asyncio.get_running_loop()

    @classmethod
    def for_run(cls, settings: ExecutorSettings) -> Self:
        return cls(env=settings.env)

    def submit(self, work: Work) -> None:
        loop = self._loop
        assert loop is not None, "ShellExecutor was not started"
        reaper = self._reaper
        if not reaper.alive:
            reaper.start()  # raises ReaperLost: the run loop fails this attempt with it
            reaper.attach(loop, self._on_message, self._on_reaper_lost)
        env = None
        if self.env or work.env:
            env = {**os.environ, **self.env, **(work.env or {})}
        key = self._next_key
        self._next_key = key + 1
        log = work.log_file
        watched = None
        if work.beat is not None:
            watched = _WatchedOutput(work.log_path, work.beat)
        try:
            reaper.spawn(key, str(work.fn), log, work.cwd, env,
                         None if watched is None else watched.write_fd)
        except BaseException:
            if watched is not None:
                watched.close()
            raise
        if watched is not None:
            watched.child_started(loop)
        self._attempts[key] = _Attempt(work, watched)
        work.handle = key

    def cancel(self, work: Work) -> None:
        attempt = self._attempts.get(work.handle)
        if attempt is not None and attempt.work is work and not attempt.stopping:
            attempt.stopping = True
            with contextlib.suppress(ReaperLost):  # then it reports every attempt lost
                self._reaper.stop(work.handle)

    async def shutdown(self) -> None:
        # Whatever still runs was written off by the run loop (it stops launching, cancels,
        # then shuts down): stop what was not stopped yet, and wait for every command to end
        # (SIGTERM, SIGKILL after the grace period), so that none outlives the run.
        for attempt in list(self._attempts.values()):
            self.cancel(attempt.work)
        if self._attempts:
            assert self._loop is not None
            self._all_ended = self._loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._all_ended),
                                       self.kill_grace + _SHUTDOWN_GUARD)
            except TimeoutError:  # pragma: no cover - a hang guard: the reaper is stuck
                self.kill_all_now()
        self._reaper.close()

    def kill_all_now(self) -> None:
        """SIGKILL every process group at once (the second Ctrl-C): no waiting, no orphans.
        Groups whose start is not reported yet are the reaper's to kill."""
        self._reaper.kill_all()
        for attempt in self._attempts.values():
            if attempt.pid is not None:
                _killpg(attempt.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ what the reaper says
    def _on_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "p":
            attempt = self._attempts.get(message[1])
            if attempt is not None:
                attempt.pid = message[2]
            return
        attempt = self._attempts.pop(message[1], None)
        if attempt is None:  # pragma: no cover - the reaper reports each key once
            return
        if attempt.watched is not None:
            attempt.watched.close()
        work = attempt.work
        if kind == "x":
            code = message[2]
            if attempt.stopping:
                self.sink(work, CANCELLED, None)
            elif code == 0:
                self.sink(work, OK, None)
            else:
                path = None if work.log_path is None else str(work.log_path)
                self.sink(work, ERROR, CommandFailed(code, log_path=path, tail=tail(path)))
        elif kind == "e":  # the command could not start (bad cwd, ...)
            _, _, errno, strerror, filename = message
            self.sink(work, ERROR, OSError(errno, strerror, filename))
        else:  # "v": it could not start for another reason (a NUL byte in it, ...)
            self.sink(work, ERROR, ValueError(message[2]))
        self._check_all_ended()

    def _on_reaper_lost(self) -> None:
        """The reaper died (someone killed it): its commands are orphans now. Kill them and
        fail their attempts; the next submit starts a new reaper."""
        pid = self._reaper.pid
        attempts, self._attempts = self._attempts, {}
        self._reaper = Reaper(grace=self.kill_grace)
        for attempt in attempts.values():
            if attempt.pid is not None:
                _killpg(attempt.pid, signal.SIGKILL)
            if attempt.watched is not None:
                attempt.watched.close()
            if attempt.stopping:
                self.sink(attempt.work, CANCELLED, None)
            else:
                self.sink(attempt.work, ERROR, BrokenExecutor(
                    f"the reaper process (pid {pid}) running task {attempt.work.task_id!r} "
                    "died; the command was killed"))
        self._check_all_ended()

    def _check_all_ended(self) -> None:
        done = self._all_ended
        if done is not None and not self._attempts and not done.done():
            done.set_result(None)


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

    def child_started(self, loop: asyncio.AbstractEventLoop) -> None:
        """The reaper has its copy of the write end: close ours (so the pipe ends when the
        command's processes do) and start reading."""
        os.close(self.write_fd)
        self.write_fd = -1
        self._loop = loop
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
