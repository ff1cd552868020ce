"""What a run tells its listeners: implement :class:`RunListener` and pass it to
``dag.run(listeners=[...])`` (or ``Runner(listeners=...)``) to watch a run as it goes.

A listener may also have ``breaker_changed(change: BreakerChange)``: it is called when a
circuit breaker opens, half-opens or closes (listeners without it are not asked).

Listeners are called on the run loop, in batches: keep them quick, and hand I/O to a thread of
your own (as the run store's recorder does).
"""

from __future__ import annotations

from corral._events import RunInfo, RunListener, Transition
from corral._limits import BreakerChange, BreakerState

__all__ = ["BreakerChange", "BreakerState", "RunInfo", "RunListener", "Transition"]
