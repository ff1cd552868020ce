"""A pool's share of its queues' depth: the demand it scales for when other workers serve the
same queues (pools on other hosts, or plain ``corral worker`` processes).

Pure: the pool supervisor (:mod:`corral.fleet._pool`) reads the workers' registry and the
queues' depths; this divides. Each queued attempt will be taken by one of the workers that
take work from its queue, each worker taking in proportion to its free slots; so each pool
counts, per queue, the depth times its share of the queue's live capacity::

    share(q) = depth(q) * own(q) / (own(q) + others(q))
    own(q)    = slots of this pool's live workers (none yet: one worker's, see below)
    others(q) = slots of every other live worker serving q (other pools', plain workers')
    waiting   = sum of share(q) over the pool's queues

Without it, two pools on one queue each count the whole queue and both grow for it: twice
the workers needed. With it the pools' shares (and the plain workers') add up to the depth,
and a lone pool's share is the whole queue. *Live*: the workers that take work (starting,
healthy, degraded; not unhealthy or stopping), as the registry shows them. A worker serving
several queues counts its slots in each (as ``corral workers``' pools count them).

A pool with no live worker (``--min-workers 0``, or all just started) counts as if it had one:
it must see some demand to start at all. Beside pools that already have capacity its share is
then small (one worker's worth), so it starts a worker only when the queue is deep enough for
one; a pool alone on the queue counts all of it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from corral.fleet._broker import WorkerInfo

__all__ = ["pool_share", "share"]


def share(depth: float, own: int, others: int, concurrency: int) -> float:
    """The part of ``depth`` queued attempts that falls to a pool whose live workers have
    ``own`` slots, beside ``others`` slots of other live workers of the queue; ``concurrency``
    (>= 1): one of its workers' slots, what it counts as when it has none live."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, not {concurrency}")
    if own < 0 or others < 0 or depth < 0:
        raise ValueError(f"negative figures: depth {depth}, own {own}, others {others}")
    mine = own or concurrency
    return depth * mine / (mine + others)


def pool_share(depths: Mapping[str, int], own: Collection[str],
               live: Sequence[WorkerInfo], concurrency: int) -> float:
    """The pool's demand from the queues ``depths`` (queue -> attempts no worker holds):
    ``own``, the ids of its workers; ``live``, every live worker of the fleet (its own among
    them)."""
    total = 0.0
    for queue, depth in depths.items():
        serving = [w for w in live if queue in w.queues]
        mine = sum(w.concurrency for w in serving if w.id in own)
        theirs = sum(w.concurrency for w in serving if w.id not in own)
        total += share(depth, mine, theirs, concurrency)
    return total
