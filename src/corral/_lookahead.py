"""Whether ordering ready tasks by rank is worth it for the rest of a run, or arrival order is
as good: a guard against estimates that reorder a queue for nothing.

Upward rank (critical path first) beats arrival order when the durations it is computed from
are right. On a first run they are guesses — the mean of a kind's finished tasks, or of every
finished task for a kind not seen yet — and the traces in ``../shared/bench`` show what a
guess costs: a rank that moves short tasks of one part of a DAG ahead of tasks that arrived
first can end a run later than arrival order would (montage and soykb, by 0.02-0.03%), while
where ranks matter they save a quarter of the run (atacseq). So at each re-rank the scheduler
asks this module what both orders would give: each is played forward from the run's present
state as a greedy list schedule on the scheduler's slots, every task taking its estimate,
running tasks their estimate minus what they have run. Rank order is kept only when it ends
the rest of the run earlier by more than :data:`GAIN`; else ready tasks go in arrival order.

Both plays ignore resources, retries and rate limits: they compare two orders under the same
simplification. One play is a heap operation per remaining task and one step per remaining
edge; the scheduler counts it in the cost of a re-rank (:data:`corral._scheduler.RERANK_COST_S`).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from corral._spec import TaskState

__all__ = ["GAIN", "finish_time", "rank_classes", "ranking_pays"]

# Rank order must end the rest of the run this much earlier (a fraction of the time left) to
# be used. python -m bench.simulate meets every target with 0.0075 to 0.0125 and no other
# value tried: at 0.005 and below soykb's first run is 1.0002x FIFO (estimates promise gains
# the true durations do not give), at 0.015 and above atacseq's is 1.053x rank_u (real gains
# of a percent or two, early in the run, are refused). A narrow window: see issue 17.
GAIN = 0.01

PENDING = TaskState.PENDING


def rank_classes(
    ranks: Sequence[float], priorities: Sequence[int] | None, shift: int | None = None
) -> list[int]:
    """Each task's place among the distinct (priority, rank) pairs, best (highest) first: the
    first part of its ready-order key. With ``shift``, the keys themselves: the place shifted
    left by ``shift`` bits, or'ed with the task (one pass, for the scheduler's start)."""
    if priorities is None:
        number = {r: c for c, r in enumerate(sorted(set(ranks), reverse=True))}
        if shift is None:
            return [number[r] for r in ranks]
        return [number[r] << shift | i for i, r in enumerate(ranks)]
    pairs = [(-p, -r) for p, r in zip(priorities, ranks, strict=True)]
    numbered = {pair: c for c, pair in enumerate(sorted(set(pairs)))}
    if shift is None:
        return [numbered[pair] for pair in pairs]
    return [numbered[pair] << shift | i for i, pair in enumerate(pairs)]


def finish_time(
    classes: Sequence[int],
    ready: Sequence[int],
    running: Sequence[tuple[float, int]],
    *,
    now: float,
    state: Sequence[TaskState],
    waiting: Sequence[int],
    dependents: Sequence[Sequence[int]],
    durations: Sequence[float],
    slots: int,
) -> float:
    """When the rest of a run ends if every task takes ``durations[i]`` and ready tasks start
    by ``classes`` (lower first), then arrival. ``ready`` lists the ready tasks in arrival
    order; ``running`` holds ``(expected end, task)``; ``waiting[i]`` counts the dependencies
    of task ``i`` not ended yet, and only tasks whose ``state`` is pending will run."""
    n = len(classes)
    task_bits = max(1, (n - 1).bit_length())
    # Arrival numbers: the ready tasks', then one per instant something ends (at most n).
    seq_bits = (len(ready) + n + 1).bit_length()
    shift = task_bits + seq_bits
    queue = [classes[i] << shift | seq << task_bits | i for seq, i in enumerate(ready)]
    heapq.heapify(queue)
    ends = list(running)
    heapq.heapify(ends)
    waiting = list(waiting)
    mask = (1 << task_bits) - 1
    seq = len(ready)
    free = slots - len(ends)
    while True:
        while free > 0 and queue:
            i = heapq.heappop(queue) & mask
            heapq.heappush(ends, (now + durations[i], i))
            free -= 1
        if not ends:
            return now
        now = ends[0][0]
        seq += 1
        while ends and ends[0][0] <= now:
            i = heapq.heappop(ends)[1]
            free += 1
            for j in dependents[i]:
                left = waiting[j] = waiting[j] - 1
                if not left and state[j] is PENDING:
                    heapq.heappush(queue, classes[j] << shift | seq << task_bits | j)


def ranking_pays(
    ranked: Sequence[int],
    arrival: Sequence[int],
    ready: Sequence[int],
    running: Sequence[tuple[float, int]],
    *,
    now: float,
    state: Sequence[TaskState],
    waiting: Sequence[int],
    dependents: Sequence[Sequence[int]],
    durations: Sequence[float],
    slots: int,
) -> bool:
    """Whether the classes ``ranked`` end the rest of the run more than :data:`GAIN` earlier
    than the classes ``arrival`` (priorities alone), by :func:`finish_time`."""
    if ranked == arrival:
        return False
    ends = [finish_time(classes, ready, running, now=now, state=state, waiting=waiting,
                        dependents=dependents, durations=durations, slots=slots)
            for classes in (ranked, arrival)]
    return ends[0] - now < (ends[1] - now) * (1.0 - GAIN)
