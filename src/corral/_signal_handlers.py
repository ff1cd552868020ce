"""Taking SIGINT and SIGTERM over, and giving them back, the one way every entry point does.

A signal that is ignored when corral would take it stays ignored. A shell without job control
starts a background job (``corral run ... &`` in a script, ``nohup``) with SIGINT ignored so
that a Ctrl-C meant for the foreground does not reach it; Python itself then raises no
KeyboardInterrupt, and POSIX asks a program that catches signals to leave such a one alone.
A program that embeds corral and ignores a signal on purpose keeps it ignored the same way.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["give_back", "take"]

Handler = Callable[[int, Any], Any]


def take(signals: Iterable[int], handler: Handler | Any) -> dict[int, Any]:
    """Handle each of ``signals`` with ``handler`` (from the main thread only; elsewhere
    nothing is taken) unless it is ignored; what each replaced, for :func:`give_back`."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    taken: dict[int, Any] = {}
    for sig in signals:
        if signal.getsignal(sig) is signal.SIG_IGN:
            continue
        taken[sig] = signal.signal(sig, handler)
    return taken


def give_back(taken: Mapping[int, Any]) -> None:
    """Restore what :func:`take` replaced."""
    for sig, previous in taken.items():
        signal.signal(sig, previous)
