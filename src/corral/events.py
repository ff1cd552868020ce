"""What a run tells its listeners: implement :class:`RunListener` and pass it to
``dag.run(listeners=[...])`` (or ``Runner(listeners=...)``) to watch a run as it goes.

Listeners are called on the run loop, in batches: keep them quick, and hand I/O to a thread of
your own (as the run store's recorder does).
"""

from __future__ import annotations

from corral._events import RunInfo, RunListener, Transition

__all__ = ["RunInfo", "RunListener", "Transition"]
