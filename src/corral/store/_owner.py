"""Who holds a run's lease, and whether that process is gone: the takeover rule.

A run's lease is renewed by the process recording it. A process killed with ``kill -9`` stops
renewing, but its lease would hold until it lapses (30 s by default). When the owner ran on
*this* machine, in *this* boot and pid namespace, the store can do better: it looks the process
up, and a process that is gone holds no lease.

The identity a run records (``runs.owner_process``)::

    <boot id>/<pid namespace>/<pid>/<start time>/<uid>
     │         │               │     │            └─ its user: another user's processes may be
     │         │               │     │               hidden (/proc mounted hidepid), never judged
     │         │               │     └─ field 22 of /proc/PID/stat, in clock ticks since boot:
     │         │               │        a pid reused by another process has another start time
     │         │               └─ the process
     │         └─ inode of /proc/self/ns/pid: containers that share a kernel (same boot id)
     │            but not a pid namespace cannot see each other's pids, so never judge them
     └─ /proc/sys/kernel/random/boot_id: another machine, or this one after a reboot, differs
        (a hostname does not: containers often share one)

Policy (:func:`is_gone`): the owner is gone only when its identity has this process's boot id
and pid namespace, ``/proc/PID`` is missing, is a zombie, or started at another time, **and**
no helper it started is still alive: its reaper outlives it by up to its grace period (3 s)
while it ends the dead run's commands, and a resume must not start them again before that.
Helpers carry ``--corral-owner=<identity>`` on their command line (:func:`helper_argument`). In
every other case (another machine, another namespace, no identity recorded, no ``/proc``: other
platforms) nothing is known, and the lease holds until it lapses, as before. A wrong "gone"
would let two processes run one run; a wrong "alive" only waits, so every doubt is "alive".

The decision is race-free: an identity names one process for ever, and a process that is gone
stays gone, so the store may decide outside its transaction and claim the run with one UPDATE
conditioned on that identity (see ``claim_run`` in ``sql/*/queries.sql``).
"""

from __future__ import annotations

import os
from functools import cache

__all__ = ["current_process", "helper_argument", "is_gone"]

_PROC = "/proc"
_HELPER = "--corral-owner="


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _stat(pid: int | str) -> tuple[str, str] | None:
    """(state, start time) of process ``pid`` from /proc/PID/stat, or None if it has none."""
    text = _read(f"{_PROC}/{pid}/stat")
    if not text:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the
    # last ')'. The fields after it are numbered from 3 (state); starttime is field 22.
    rest = text.rpartition(")")[2].split()
    if len(rest) < 20:
        return None
    return rest[0], rest[19]


@cache
def _machine() -> str | None:
    """``<boot id>/<pid namespace>`` of this process, or None where /proc cannot tell."""
    boot = _read(f"{_PROC}/sys/kernel/random/boot_id")
    try:
        namespace = os.readlink(f"{_PROC}/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return None
    if not boot or not namespace.startswith("pid:["):
        return None
    return f"{boot}/{namespace[5:-1]}"


def current_process() -> str | None:
    """This process's identity (see the module's note), or None where it cannot be known."""
    machine = _machine()
    if machine is None:
        return None
    stat = _stat("self")
    if stat is None:
        return None
    return f"{machine}/{os.getpid()}/{stat[1]}/{os.getuid()}"


def helper_argument() -> list[str]:
    """The argument that marks a helper process (the reaper) as this process's, so that its
    run is not taken over while the helper still ends its commands; [] where unknown."""
    me = current_process()
    return [] if me is None else [f"{_HELPER}{me}"]


def _helper_alive(identity: str) -> bool:
    """Whether a live process carries ``--corral-owner=identity`` (one scan of /proc)."""
    mark = f"{_HELPER}{identity}".encode()
    try:
        pids = [p for p in os.listdir(_PROC) if p.isdigit()]
    except OSError:
        return True  # cannot tell: as if alive
    for pid in pids:
        try:
            with open(f"{_PROC}/{pid}/cmdline", "rb") as f:
                if mark not in f.read():
                    continue
        except OSError:  # gone meanwhile, or not ours to read
            continue
        stat = _stat(pid)
        if stat is not None and stat[0] not in ("Z", "X"):
            return True
    return False


def is_gone(identity: str | None) -> bool:
    """Whether the process ``identity`` names is known to be gone (see the module's note).
    False whenever that cannot be known."""
    if not identity:
        return False
    machine = _machine()
    parts = identity.split("/")
    if machine is None or len(parts) != 5 or "/".join(parts[:2]) != machine:
        return False
    pid, started, uid = parts[2], parts[3], parts[4]
    if not pid.isdigit() or (uid != str(os.getuid()) and os.getuid() != 0):
        return False  # another user's process may be hidden from us: not known
    stat = _stat(pid)
    if stat is None:
        # No /proc/PID at all. /proc itself is there (we read our own boot id), so the
        # process has exited and been reaped.
        gone = os.path.isdir(_PROC) and not os.path.exists(f"{_PROC}/{pid}")
    else:
        state, start = stat
        gone = state in ("Z", "X") or start != started
    return gone and not _helper_alive(identity)
