"""Load balancing: which worker of a queue an attempt is sent to, by the queue's strategy.

Pure: no clock, no broker, no threads. The coordinator (:mod:`corral.fleet._coordinator`)
builds the :class:`Candidate` list from the workers' registry and its own count of attempts
sent and not yet ended, and calls :func:`choose` once per attempt::

    broker.workers() (every ~0.5 s) ──> candidates: id, capacity, load, weight
    coordinator: attempt of queue Q ──choose(strategy of Q, candidates, state of Q)──> worker id
                                         (None: no candidate, the shared queue)

``pull`` (the default) is no strategy at all: attempts go to the queue's shared stream and
each worker takes as many as it has free slots, which behaves like ``least_loaded`` with no
dispatcher. The others push an attempt to one worker:

==============  ================================================================
round_robin     each candidate in turn (by id), whatever its load
random          a candidate drawn by the state's seeded generator
least_loaded    the fewest in flight for its capacity (load / capacity); ties by id
weighted        smooth weighted round robin over the workers' static ``--weight``
==============  ================================================================
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PULL", "QUEUE_NAME", "STRATEGIES", "BalanceState", "Candidate", "choose",
           "parse_queues"]

PULL = "pull"
STRATEGIES = (PULL, "round_robin", "random", "least_loaded", "weighted")
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")  # as corral worker --queue takes


@dataclass(frozen=True, slots=True)
class Candidate:
    """A live worker that serves the queue: its ``capacity`` (concurrency), its ``load``
    (attempts in flight there, as the coordinator best knows) and its static ``weight``."""

    id: str
    capacity: int
    load: int = 0
    weight: int = 1


class BalanceState:
    """What a strategy remembers between choices, for one queue: the last worker chosen
    (round robin), the smooth weighted round robin's current weights, the generator."""

    __slots__ = ("current", "last", "rng")

    def __init__(self, rng: random.Random | None = None) -> None:
        self.last: str | None = None
        self.current: dict[str, int] = {}
        self.rng = rng if rng is not None else random.Random()


def choose(strategy: str, candidates: Sequence[Candidate], state: BalanceState) -> str | None:
    """The id of the worker to send the next attempt to; None when there is no candidate
    (or for ``pull``: the shared queue). ``candidates`` in any order; ``state`` is updated.
    Raises ``ValueError`` for an unknown strategy (pipelines are validated before this)."""
    if strategy == PULL or not candidates:
        return None
    if strategy == "least_loaded":
        # load / capacity, compared without division: a.load * b.cap < b.load * a.cap
        best = candidates[0]
        for c in candidates[1:]:
            left, right = c.load * max(best.capacity, 1), best.load * max(c.capacity, 1)
            if left < right or (left == right and c.id < best.id):
                best = c
        return best.id
    if strategy == "round_robin":
        ids = sorted(c.id for c in candidates)
        last = state.last
        chosen = next((i for i in ids if last is not None and i > last), ids[0])
        state.last = chosen
        return chosen
    if strategy == "random":
        return state.rng.choice(sorted(c.id for c in candidates))
    if strategy == "weighted":
        return _smooth_weighted(candidates, state)
    raise ValueError(f"unknown balancing strategy {strategy!r} (one of {', '.join(STRATEGIES)})")


def _smooth_weighted(candidates: Sequence[Candidate], state: BalanceState) -> str:
    """nginx's smooth weighted round robin: each candidate gains its weight, the highest
    (ties by id) is chosen and loses the total. Weights 5, 1, 1 give a a b a c a a (spread,
    not a a a a a b c)."""
    current = state.current
    present = {c.id for c in candidates}
    for gone in [w for w in current if w not in present]:
        del current[gone]
    total = 0
    best: str | None = None
    for c in sorted(candidates, key=lambda c: c.id):
        weight = max(c.weight, 0)
        total += weight
        current[c.id] = current.get(c.id, 0) + weight
        if best is None or current[c.id] > current[best]:
            best = c.id
    assert best is not None  # candidates is not empty
    current[best] -= total
    return best


def parse_queues(queues: Mapping[str, Any] | None,
                 ) -> tuple[dict[str, str], list[tuple[str, str | None]]]:
    """The queues' declarations (``{"gpu": {"strategy": "least_loaded"}}``; a strategy alone
    is short for that) as queue -> strategy, and the problems found: (message, hint). A
    queue's ``breaker`` is :func:`corral._limits.queue_breakers`' business."""
    from corral._words import short_repr, suggest

    out: dict[str, str] = {}
    problems: list[tuple[str, str | None]] = []
    for name, decl in (queues or {}).items():
        if not isinstance(name, str) or not QUEUE_NAME.fullmatch(name):
            problems.append((f"queues: {short_repr(name)} is not a queue name", "letters, "
                             "digits, '_', '.', '-'; up to 100"))
            continue
        strategy = decl.get("strategy", PULL) if isinstance(decl, Mapping) else decl
        extra = sorted(set(decl) - {"strategy", "breaker"}) if isinstance(decl, Mapping) else []
        if extra:
            problems.append((f"queues: {name}: unknown key {short_repr(extra[0])}",
                             "a queue declares its strategy and its pool breaker: "
                             "{strategy: least_loaded, breaker: {failures: 3}}"))
        elif strategy not in STRATEGIES:
            close = suggest(str(strategy), STRATEGIES) if isinstance(strategy, str) else None
            problems.append((f"queues: {name}: unknown strategy {short_repr(strategy)}",
                             f"did you mean {close!r}?" if close else
                             f"one of {', '.join(STRATEGIES)}"))
        else:
            out[name] = strategy
    return out, problems
