"""Corral's side of the reaper: the small process that starts a run's shell commands and ends
whatever corral leaves behind, however corral ends.

Each shell attempt runs in its own process group, so that stopping it stops its children too.
The price: nothing ties the group to corral, so a ``kill -9`` of corral (or the machine's OOM
killer) would leave its running commands behind, and a resume would run them a second time
beside the first. The reaper (:mod:`._reaper_main`, a child in a session of its own) closes that
gap, and being the commands' parent it closes it completely: it knows each group from the
instant the group exists, not a moment later::

    corral ──spawn / stop / watch──> socket pair ──> reaper ──> /bin/sh -c CMD, ...
       ^                                                      │
       └───────── started pid / exit status / error ──────────┘
                  end of file (corral gone): SIGTERM every group still alive,
                  SIGKILL after the grace period, then exit

Corral's end of the socket is its alone (not inherited by tasks), so end of file means corral
is gone, however it went; a corral that ends normally has ended its groups first and the reaper
exits with nothing to do. Groups started elsewhere (the process executor's workers) can be
*watched*: they get the same treatment at end of file.

Corral's sends block (they are small, and the reaper never blocks on its own writes, so it
always reads again); what the reaper says is read by the run loop (:meth:`Reaper.attach`).
"""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["Reaper", "ReaperLost"]

_MAIN = str(Path(__file__).with_name("_reaper_main.py"))
_HEADER = struct.Struct(">I")
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)


class ReaperLost(OSError):
    """The reaper process is gone (someone killed it) or could not be started."""


class Reaper:
    """Started on first use (:meth:`spawn` or :meth:`watch`); :meth:`close` lets it exit.
    ``grace`` is how long groups get between SIGTERM and SIGKILL, on a stop and once corral is
    gone."""

    def __init__(self, *, grace: float = 3.0) -> None:
        self.grace = grace
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._inbuf = bytearray()
        self._environ: Any = None  # os.environ as the reaper inherited it
        self._loop: Any = None
        self._on_message: Callable[[tuple[Any, ...]], None] | None = None
        self._on_lost: Callable[[], None] | None = None
        self._lost = False
        self._out = bytearray()  # requests not sent yet (attached: sent once per loop iteration)
        self._flush_scheduled = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def alive(self) -> bool:
        return self._sock is not None

    def start(self) -> None:
        """Start the reaper process (once). Raises :class:`ReaperLost` when it cannot start."""
        if self._sock is not None:
            return
        if self._lost:
            raise ReaperLost(f"the reaper process (pid {self.pid}) is gone")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._environ = _environ_state()
            # The last argument names corral's process: until the reaper has ended a dead
            # corral's commands and exited, the run is not taken over (corral.store._owner).
            from corral.store._owner import helper_argument

            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", _MAIN, str(theirs.fileno()), repr(self.grace),
                 *helper_argument()],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True,  # a kill of corral's whole process group spares it
            )
        except OSError as exc:
            ours.close()
            self._lost = True
            raise ReaperLost(f"could not start the reaper process: {exc}") from exc
        finally:
            theirs.close()
        self.pid = self._proc.pid
        self._sock = ours

    def attach(self, loop: Any, on_message: Callable[[tuple[Any, ...]], None],
               on_lost: Callable[[], None]) -> None:
        """Read what the reaper says on ``loop``: each message goes to ``on_message``; end of
        file (the reaper died) to ``on_lost``, once."""
        assert self._sock is not None
        self._loop = loop
        self._on_message = on_message
        self._on_lost = on_lost
        loop.add_reader(self._sock.fileno(), self._on_readable)

    def close(self, wait: float | None = None) -> None:
        """End of file for the reaper: it ends any group still alive and exits. ``wait``:
        seconds to wait for it to exit (None: the grace period and some)."""
        if self._sock is not None and self._out:
            with contextlib.suppress(ReaperLost):
                self.flush()
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(sock.fileno())
            sock.close()
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(timeout=self.grace + 5 if wait is None else wait)
            except subprocess.TimeoutExpired:  # pragma: no cover - it only reads and exits
                proc.kill()
                proc.wait()

    # ------------------------------------------------------------------ requests
    def spawn(self, key: int, cmd: str, log_path: str | None, cwd: str | None,
              env: dict[str, str] | None, fd: int | None = None) -> None:
        """Start ``/bin/sh -c cmd`` in a session of its own, output to ``log_path`` (appended),
        or to ``fd`` (a pipe's write end) when given; ``env`` None is corral's environment.

        Attached to a loop, the request is sent at the end of the loop's current iteration,
        with every other request made meanwhile (one write for a batch of starts)."""
        self.start()
        if env is None and not _environ_unchanged(self._environ):
            env = dict(os.environ)  # changed since the reaper started: send it whole
        data = marshal.dumps(("s", key, cmd, log_path, cwd, env, fd is not None))
        if fd is None:
            self._queue(_HEADER.pack(len(data)) + data)
            return
        self.flush()  # the descriptor travels with its own message's first byte
        assert self._sock is not None
        frame = _HEADER.pack(len(data)) + data
        try:
            sent = self._sock.sendmsg(
                [frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))], _NOSIGNAL)
            if sent < len(frame):
                self._sock.sendall(frame[sent:], _NOSIGNAL)
        except OSError as exc:
            self._broken(exc)

    def stop(self, key: int) -> None:
        """SIGTERM the group of attempt ``key``, SIGKILL after the grace period."""
        data = marshal.dumps(("t", key))
        self._queue(_HEADER.pack(len(data)) + data)

    def kill_all(self) -> None:
        """SIGKILL every group now, and each one whose start is still pending as it starts.
        Safe in a signal handler (a signal to the reaper, no write that could land in the
        middle of another): the process is about to exit."""
        if self.pid is not None and self._sock is not None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGUSR1)

    def watch(self, pgid: int) -> None:
        """Process group ``pgid`` (started elsewhere) has started: end it if corral dies first."""
        with contextlib.suppress(ReaperLost):  # no reaper: runs still work, with the old gap
            self.start()
            self._send_message(("+", pgid))

    def forget(self, pgid: int) -> None:
        """Process group ``pgid`` has ended (and been ended): nothing to do for it any more."""
        if self._sock is not None:
            with contextlib.suppress(ReaperLost):
                self._send_message(("-", pgid))

    def flush(self) -> None:
        """Send the requests queued during this iteration of the loop."""
        self._flush_scheduled = False
        if self._out:
            out, self._out = self._out, bytearray()
            self._send(bytes(out))

    # ------------------------------------------------------------------ internals
    def _queue(self, frame: bytes) -> None:
        if self._loop is None:
            self._send(frame)
            return
        self._out += frame
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        try:
            self.flush()
        except ReaperLost:  # the attempts it had were failed by on_lost
            pass

    def _send_message(self, message: tuple[Any, ...]) -> None:
        data = marshal.dumps(message)
        self._send(_HEADER.pack(len(data)) + data)

    def _send(self, frame: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise ReaperLost(f"the reaper process (pid {self.pid}) is gone")
        try:
            sock.sendall(frame, _NOSIGNAL)
        except OSError as exc:
            self._broken(exc)

    def _broken(self, exc: OSError) -> NoReturn:
        self._lose()
        raise ReaperLost(f"the reaper process (pid {self.pid}) is gone: {exc}") from exc

    def _lose(self) -> None:
        if self._lost:
            return
        self._lost = True
        self.close(wait=1.0)
        if self._on_lost is not None:
            self._on_lost()

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(262144, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._lose()
            return
        buf = self._inbuf
        buf += data
        start = 0
        end = len(buf)
        on_message = self._on_message
        assert on_message is not None
        while end - start >= 4:
            (size,) = _HEADER.unpack_from(buf, start)
            if end - start - 4 < size:
                break
            message = marshal.loads(buf[start + 4:start + 4 + size])
            start += 4 + size
            on_message(message)
        del buf[:start]


def _environ_state() -> Any:
    """A copy of ``os.environ`` as it is now, for :func:`_environ_unchanged`."""
    data = getattr(os.environ, "_data", None)  # CPython: the encoded dict, cheap to compare
    return dict(data) if data is not None else dict(os.environ)


def _environ_unchanged(state: Any) -> bool:
    data = getattr(os.environ, "_data", None)
    return bool(data == state) if data is not None else dict(os.environ) == state
