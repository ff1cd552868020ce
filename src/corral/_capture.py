"""Per-task output for Python tasks that run inside corral's process (thread, async).

Shell and process tasks write to their own file descriptors, which the executors point at the
attempt's log file. Thread and async tasks share the process's ``sys.stdout`` and
``sys.stderr`` with each other and with corral's own display, so during a run those two are
replaced by a :class:`_Router`: a write goes to the log of the task whose context it runs in
(a context variable, set by the executor around each attempt), and anywhere else to the real
stream. A task that prints nothing costs no file: the log is opened on the first write.

Output is a sign of life: for a task with a ``heartbeat``, each write also calls the attempt's
beat (and without a log directory the text goes on to the real stream). The run loop installs
the router for such tasks even when it keeps no logs.

What is not captured: output written to file descriptors 1 and 2 directly (C extensions,
``os.write``), and logging handlers that kept a reference to the real stream before the run.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import io
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["TaskOutput", "current", "install", "log_name", "uninstall"]


class TaskOutput:
    """The output of one attempt: its log file (if any, opened on the first write) and its
    beat (if the task has a heartbeat)."""

    __slots__ = ("_file", "beat", "path")

    def __init__(self, path: str | Path | None, beat: Callable[[], None] | None = None) -> None:
        self.path = path
        self.beat = beat
        self._file: IO[str] | None = None

    def write(self, text: str) -> int:
        if self._file is None:
            assert self.path is not None, "an attempt without a log has no file to write"
            self._file = open(self.path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._file.write(text)
        return len(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


current: contextvars.ContextVar[TaskOutput | None] = contextvars.ContextVar(
    "corral_task_output", default=None
)


class _Router(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr`` during a run."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        target = current.get()
        if target is not None:
            if target.beat is not None:
                target.beat()  # output is a sign of life
            if target.path is not None:
                return target.write(text)
        written: int = self.stream.write(text)
        return written

    def flush(self) -> None:
        target = current.get()
        if target is not None and target.path is not None:
            target.flush()
        else:
            self.stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return bool(self.stream.isatty())

    def fileno(self) -> int:
        return int(self.stream.fileno())

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.stream, "encoding", "utf-8"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


_installed = 0


def install() -> None:
    """Route ``sys.stdout`` and ``sys.stderr`` (nested runs share one installation)."""
    global _installed
    if _installed == 0:
        if not isinstance(sys.stdout, _Router):
            sys.stdout = _Router(sys.stdout)
        if not isinstance(sys.stderr, _Router):
            sys.stderr = _Router(sys.stderr)
    _installed += 1


def uninstall() -> None:
    """Undo :func:`install` once the last run using it has ended."""
    global _installed
    _installed = max(0, _installed - 1)
    if _installed == 0:
        if isinstance(sys.stdout, _Router):
            sys.stdout = sys.stdout.stream
        if isinstance(sys.stderr, _Router):
            sys.stderr = sys.stderr.stream


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def log_name(task_id: str) -> str:
    """A file name for a task id: the id itself when it is safe, else a cleaned-up id with a
    short hash, so that ``a/b`` and ``a_b`` never share a log."""
    # Safe: ASCII letters, digits and ``._-`` only (what _UNSAFE does not match). Asked once
    # per attempt of every task that keeps a log, so said with str methods: a fifth of the
    # cost of a regular expression search (and of a cache, which missed on every first
    # attempt).
    if not task_id or (task_id.isascii() and task_id.replace("_", "a").replace(
            "-", "a").replace(".", "a").isalnum()):
        return task_id
    return _cleaned(task_id)


@functools.lru_cache(maxsize=65536)
def _cleaned(task_id: str) -> str:
    digest = hashlib.sha256(task_id.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', task_id)}-{digest}"
