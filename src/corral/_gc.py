"""Pausing the cyclic garbage collector around work that allocates many objects and no cycles.

Reading a pipeline file and taking a run's DAG snapshot each make an object or more per task in
one go. With the collector on, every few hundred of them start a collection that walks the
young objects again (and now and then everything), so the work costs several times what it
would; none of what they make forms a cycle, so there is nothing for it to find.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused_gc"]


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection in the block (turned on again after it, if it was on)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
