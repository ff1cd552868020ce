"""A pool's share of its queues' depth: pools (and plain workers) on one queue split it by
their live capacity; the shares add up to the depth, and a lone pool gets all of it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.fleet._autoscale import Load, ScalingPolicy, decide
from corral.fleet._broker import WorkerInfo
from corral.fleet._share import pool_share, share


def row(id: str, queues: tuple[str, ...] = ("default",), c: int = 2) -> WorkerInfo:
    return WorkerInfo(id=id, host="h", pid=1, queues=queues, concurrency=c)


CASES = [
    # (what, depth, own slots, others' slots, concurrency, share)
    ("alone, with workers", 10, 4, 0, 2, 10.0),
    ("alone, none live yet: it counts as one worker", 10, 0, 0, 2, 10.0),
    ("two pools of equal capacity: half each", 10, 4, 4, 2, 5.0),
    ("by capacity: a quarter", 8, 2, 6, 1, 2.0),
    ("none live beside pools that have some: one worker's worth", 9, 0, 8, 1, 1.0),
    ("nothing queued", 0, 4, 4, 2, 0.0),
]


@pytest.mark.parametrize(("what", "depth", "own", "others", "c", "want"), CASES,
                         ids=[c[0] for c in CASES])
def test_share(what, depth, own, others, c, want):
    assert share(depth, own, others, c) == pytest.approx(want)


@pytest.mark.parametrize("bad", [(1, 1, 1, 0), (-1, 1, 1, 1), (1, -1, 1, 1), (1, 1, -1, 1)])
def test_bad_figures_are_refused(bad):
    with pytest.raises(ValueError, match="concurrency|negative"):
        share(*bad)


@given(depth=st.integers(0, 10_000), pools=st.lists(st.integers(1, 64), min_size=1, max_size=8),
       plain=st.integers(0, 64))
def test_the_shares_of_every_pool_and_plain_worker_add_up_to_the_depth(depth, pools, plain):
    """Pools with live capacities ``pools`` and plain workers with ``plain`` slots on one
    queue: what each pool counts, plus the plain workers' part, is the depth."""
    total = sum(pools) + plain
    shares = [share(depth, own, total - own, 1) for own in pools]
    assert sum(shares) + depth * plain / total == pytest.approx(depth)
    assert all(0 <= s <= depth for s in shares)


@given(depth=st.integers(0, 10_000), own=st.integers(0, 64), c=st.integers(1, 16))
def test_a_lone_pool_gets_the_whole_queue(depth, own, c):
    assert share(depth, own, 0, c) == depth


@given(depths=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 1000),
                              min_size=1),
       sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4), c=st.integers(1, 8))
def test_pools_over_the_same_queues_split_each_queues_depth(depths, sizes, c):
    """Pools of ``sizes`` workers of concurrency ``c``, each worker serving every queue."""
    queues = tuple(depths)
    pools = [[row(f"p{i}-w{k}", queues, c) for k in range(n)] for i, n in enumerate(sizes)]
    live = [w for pool in pools for w in pool]
    got = [pool_share(depths, {w.id for w in pool}, live, c) for pool in pools]
    assert sum(got) == pytest.approx(sum(depths.values()))
    if len(pools) == 1:
        assert got[0] == sum(depths.values())


def test_only_the_workers_serving_a_queue_share_it():
    mine = [row("a", ("default", "gpu"))]
    gpu_only = row("b", ("gpu",))
    live = [*mine, gpu_only]
    # default: all of it (b does not serve it); gpu: half of it
    assert pool_share({"default": 6, "gpu": 4}, {"a"}, live, 2) == 6 + 2


def test_two_pools_on_one_queue_grow_to_what_the_queue_needs_not_twice_that():
    """The issue: pools of 3 busy workers each, 2 attempts queued. Each counting the whole
    queue, both grow to 5 (10 workers for 8 attempts); counting its share, each to 4."""
    policy = ScalingPolicy(min_workers=1, max_workers=10, target=1.0, cooldown_s=0)
    a = [row(f"a{k}", c=1) for k in range(3)]
    b = [row(f"b{k}", c=1) for k in range(3)]
    waiting = pool_share({"default": 2}, {w.id for w in a}, [*a, *b], 1)
    shared = decide(policy, Load(3, 1, 3, waiting, queued=2), 0.0)
    whole = decide(policy, Load(3, 1, 3, 2), 0.0)
    assert (shared.workers, whole.workers) == (4, 5)
    assert "waiting 1 of 2 queued" in shared.reason
