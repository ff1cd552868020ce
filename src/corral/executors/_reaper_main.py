"""The reaper process: starts a run's shell commands, and ends them when corral goes.

Run as ``python -I -S _reaper_main.py FD GRACE`` by :class:`corral.executors._reaper.Reaper`
(standard library only, no corral import: it starts in milliseconds). ``FD`` is its end of a
socket pair with corral; nothing else holds corral's end, so end of file on it means corral is
gone, however it went (``kill -9``, the OOM killer, a normal exit).

It is the parent of every shell command of the run, so it knows each process group from the
instant the group exists: there is no moment at which corral could die and leave a command that
nobody will end. Starting commands here also keeps their cost apart from corral's: a small
interpreter's ``vfork`` costs the same whatever corral's heap holds, and runs beside the run
loop, not under its lock. ::

    corral ──spawn / stop / watch───> socket ──> main thread ──queue──> starter threads
           <──────────── started pid / exit status / error ──────────────────┘   │ Popen (vfork)
                                                                                  ▼ waits for it
                                              /bin/sh -c CMD (own session = own process group)

One *starter* thread per running command (a pool, grown on demand and reused) starts it with
``subprocess.Popen`` — ``vfork`` + ``exec`` with the interpreter's lock released, so starts
overlap, as they do in a pool of threads calling ``subprocess.run`` — and waits for it. When the
shell exits, the thread SIGKILLs what is left of its group (background children) while the
shell's pid is still reserved (``waitid`` with ``WNOWAIT``: the zombie keeps the group id from
being reused), reaps it and reports.

Messages are ``marshal``-ed tuples, each framed by a 4-byte big-endian length (a heartbeat-watched
command's output pipe rides along its spawn message as ``SCM_RIGHTS``):

- corral → reaper: ``("s", key, cmd, log_path, cwd, env, has_fd)`` start a command;
  ``("t", key)`` stop it (SIGTERM to its group, SIGKILL after the grace period);
  ``("+", pgid)`` / ``("-", pgid)`` watch / forget a group
  started elsewhere (the process executor's workers).
- SIGUSR1 (a signal, so that corral can send it from a signal handler, mid-write): SIGKILL
  every group now, and each pending one as it starts (corral's second Ctrl-C).
- reaper → corral: ``("p", key, pid)`` started; ``("x", key, status)`` ended (exit code, or
  ``-signal``); ``("e", key, errno, strerror, filename)`` could not start (a missing cwd, ...);
  ``("v", key, message)`` could not start for another reason (a NUL byte in the command).

At end of file it SIGTERMs every group still alive — started or watched —, SIGKILLs them after
the grace period, and exits once its commands are reaped. It lives in its own session and
SIGINT, SIGTERM and SIGHUP do nothing to it (no-op handlers, which ``exec`` resets to the
default in the commands): a Ctrl-C, a closed terminal or a kill of corral's process group must
not take it before it has done its job. Only starter threads write to the socket, and the main
thread always reads, so corral's blocking sends always complete.
"""

from __future__ import annotations

import marshal
import os
import queue
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

HEADER = struct.Struct(">I")
LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
CAN_PEEK = hasattr(os, "waitid") and hasattr(os, "WNOWAIT")


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except OSError:
        return False


class Reaper:
    def __init__(self, sock: socket.socket, grace: float) -> None:
        self.sock = sock
        self.grace = grace
        self.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.inbuf = bytearray()
        self.fds: list[int] = []  # received with spawn messages, in order
        self.send_lock = threading.Lock()
        self.lock = threading.Lock()  # guards everything below
        self.pids: dict[int, int] = {}  # key -> pid of a running command
        self.stops: set[int] = set()  # keys to stop as soon as they have started
        self.deadlines: dict[int, float] = {}  # pid -> when to SIGKILL its group
        self.watched: set[int] = set()  # groups started elsewhere
        self.ending = 0  # the signal every new group gets at once (corral gone, SIGUSR1)
        self.busy = 0  # commands starting or running
        self.idle = 0  # starter threads waiting for work
        self.work: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.eof = False
        self.kill_now = False  # SIGUSR1 came
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)  # a signal wakes select
        signal.signal(signal.SIGUSR1, self.on_kill_signal)
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ, "sock")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")

    # ------------------------------------------------------------------ main thread
    def serve(self) -> None:
        while True:
            with self.lock:
                if self.eof and not self.busy:
                    return
                timeout = None
                if self.deadlines:
                    timeout = max(0.0, min(self.deadlines.values()) - time.monotonic())
            for key, _mask in self.selector.select(timeout):
                if key.data == "wake":
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    self.receive()
            if self.kill_now:
                self.kill_now = False
                self.end_all(signal.SIGKILL)
            self.kill_due()

    def receive(self) -> None:
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(
                262144, socket.CMSG_SPACE(16 * 4))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary = b"", []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                self.fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
        if not data:
            self.corral_gone()
            return
        self.inbuf += data
        buf = self.inbuf
        start = 0
        while len(buf) - start >= 4:
            (size,) = HEADER.unpack_from(buf, start)
            if len(buf) - start - 4 < size:
                break
            try:
                message = marshal.loads(buf[start + 4:start + 4 + size])
            except (EOFError, ValueError, TypeError):  # pragma: no cover - cannot happen
                self.corral_gone()  # a garbled stream: act as if corral were gone
                return
            start += 4 + size
            self.handle(message)
        del buf[:start]

    def handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "s":
            fd = self.fds.pop(0) if message[6] else None
            with self.lock:
                self.busy += 1
                start_thread = not self.idle
                if not start_thread:
                    self.idle -= 1
            self.work.put((*message[1:6], fd))
            if start_thread:
                threading.Thread(target=self.starter, daemon=True).start()
        elif kind == "t":
            with self.lock:
                pid = self.pids.get(message[1])
                if pid is None:
                    self.stops.add(message[1])  # not started yet: stopped when it is
                else:
                    self.stop_locked(pid)
        elif kind == "+":
            with self.lock:
                self.watched.add(message[1])
        elif kind == "-":
            with self.lock:
                self.watched.discard(message[1])

    def on_kill_signal(self, signum: int, frame: Any) -> None:
        self.kill_now = True  # the main thread acts on it (this may interrupt it holding a lock)

    def stop_locked(self, pid: int) -> None:
        if pid not in self.deadlines:
            _signal_group(pid, signal.SIGTERM)
            self.deadlines[pid] = time.monotonic() + self.grace

    def kill_due(self) -> None:
        with self.lock:
            if not self.deadlines:
                return
            now = time.monotonic()
            for pid, when in list(self.deadlines.items()):
                if when <= now:
                    _signal_group(pid, signal.SIGKILL)
                    del self.deadlines[pid]

    def end_all(self, sig: int) -> None:
        """Signal every group, now and as each pending one starts; SIGKILL after the grace."""
        with self.lock:
            if sig == signal.SIGKILL or not self.ending:
                self.ending = sig
            for pid in self.pids.values():
                _signal_group(pid, sig)
                if sig == signal.SIGTERM:
                    self.deadlines.setdefault(pid, time.monotonic() + self.grace)
            for pgid in self.watched:
                _signal_group(pgid, sig)
            watched = set(self.watched) if sig == signal.SIGTERM else set()
            self.watched.clear()
            if watched:
                self.busy += 1  # until the watched groups are gone
        if watched:  # groups we are not the parent of: poll them until the grace is up
            threading.Thread(target=self.end_watched, args=(watched,), daemon=True).start()

    def end_watched(self, groups: set[int]) -> None:
        deadline = time.monotonic() + self.grace
        while groups and time.monotonic() < deadline:
            time.sleep(0.02)
            groups = {g for g in groups if _signal_group(g, 0)}
        for pgid in groups:
            _signal_group(pgid, signal.SIGKILL)
        self.done()

    def corral_gone(self) -> None:
        """End of file: corral is gone or done. End every group still alive."""
        self.eof = True
        self.selector.unregister(self.sock)
        self.end_all(signal.SIGTERM)

    def done(self) -> None:
        with self.lock:
            self.busy -= 1
            last = self.eof and not self.busy
        if last:
            self.wake()  # the main thread exits

    # ------------------------------------------------------------------ starter threads
    def starter(self) -> None:
        while True:
            key, cmd, log_path, cwd, env, fd = self.work.get()
            try:
                self.run(key, cmd, log_path, cwd, env, fd)
            finally:
                with self.lock:
                    self.idle += 1
                self.done()

    def run(self, key: int, cmd: str, log_path: str | None, cwd: str | None,
            env: dict[str, str] | None, fd: int | None) -> None:
        out = fd
        try:
            if out is None and log_path is not None:
                out = self.open_log(log_path)
            proc = subprocess.Popen(
                ["/bin/sh", "-c", cmd], stdin=self.devnull,
                stdout=subprocess.DEVNULL if out is None else out, stderr=subprocess.STDOUT,
                cwd=cwd, env=env, start_new_session=True,
            )
        except OSError as exc:
            self.send(("e", key, exc.errno or 0, exc.strerror or str(exc),
                       None if exc.filename is None else str(exc.filename)))
            return
        except Exception as exc:  # a NUL byte in the command or environment, ...
            self.send(("v", key, f"the command could not start: {exc}"))
            return
        finally:
            if out is not None:
                os.close(out)
        pid = proc.pid
        with self.lock:
            self.pids[key] = pid
            if self.ending:
                _signal_group(pid, self.ending)
                if self.ending == signal.SIGTERM:
                    self.deadlines[pid] = time.monotonic() + self.grace
                self.stops.discard(key)
            elif key in self.stops:
                self.stops.discard(key)
                self.stop_locked(pid)
        self.send(("p", key, pid))
        if self.deadlines:
            self.wake()
        if CAN_PEEK:
            while True:
                try:
                    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                    break
                except ChildProcessError:
                    break
            # What is left of the group (a background child) goes with its shell. The shell is
            # a zombie until the wait below, so its pid (the group id) cannot have been reused.
            _signal_group(pid, signal.SIGKILL)
            status = proc.wait()
        else:  # no WNOWAIT: reap first (a reused group id is then merely unlikely)
            status = proc.wait()
            _signal_group(pid, signal.SIGKILL)
        with self.lock:
            del self.pids[key]
            self.deadlines.pop(pid, None)
        self.send(("x", key, status))

    def wake(self) -> None:
        """Make the main thread look again (a command ended, a deadline was set)."""
        try:
            os.write(self.wake_w, b"!")
        except BlockingIOError:
            pass

    @staticmethod
    def open_log(path: str) -> int:
        try:
            return os.open(path, LOG_FLAGS, 0o666)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            return os.open(path, LOG_FLAGS, 0o666)

    def send(self, message: tuple[Any, ...]) -> None:
        data = marshal.dumps(message)
        with self.send_lock:
            if self.eof:
                return
            try:
                self.sock.sendall(HEADER.pack(len(data)) + data)
            except OSError:  # corral is gone; its end of file will tell the main thread
                pass


def main() -> None:
    # No-op handlers, not SIG_IGN: an ignored signal would stay ignored in the commands.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: None)
    fd = int(sys.argv[1])
    os.set_inheritable(fd, False)  # commands must not hold corral's socket
    Reaper(socket.socket(fileno=fd), float(sys.argv[2])).serve()


if __name__ == "__main__":
    main()
