"""The guard on re-ranks (corral._lookahead): the rest of a run played out in two orders, and
rank order kept only when it pays. Pure functions, fed tables; and the benchmark that holds
the policy to issue 17's targets on the real traces (python -m bench.simulate --check)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from corral._lookahead import GAIN, finish_time, rank_classes, ranking_pays
from corral._spec import TaskState

P, R, D = TaskState.PENDING, TaskState.RUNNING, TaskState.SUCCEEDED
REPO = Path(__file__).resolve().parents[2]


def independent(durations, slots, classes, ready=None):
    """Ready tasks with no dependencies between them, from time 0."""
    n = len(durations)
    return finish_time(classes, list(range(n)) if ready is None else ready, [], now=0.0,
                       state=[P] * n, waiting=[0] * n, dependents=[()] * n,
                       durations=durations, slots=slots)


@pytest.mark.parametrize(("ranks", "priorities", "classes"), [
    ([3.0, 1.0, 3.0, 2.0], None, [0, 2, 0, 1]),
    ([3.0, 1.0, 3.0, 2.0], [0, 1, 0, 0], [1, 0, 1, 2]),  # priority first, then rank
    ([0.0, 0.0, 0.0], [0, 2, 0], [1, 0, 1]),  # arrival order: priorities alone
])
def test_classes_number_priority_then_rank_best_first(ranks, priorities, classes):
    assert rank_classes(ranks, priorities) == classes


@pytest.mark.parametrize(("classes", "end"), [
    ([0, 0, 0, 0], 11.0),  # arrival: 0 and 1, then 2 and 3; 3 ends at 1 + 10
    ([1, 1, 1, 0], 10.0),  # 3 first, the short ones beside it
])
def test_a_play_starts_ready_tasks_by_class_then_arrival(classes, end):
    assert independent([1.0, 1.0, 1.0, 10.0], 2, classes) == end


def test_arrival_order_is_the_order_given_not_the_task_numbers():
    # Task 3 (10 s) arrived first: it starts at once, and the play ends at 10.
    assert independent([1.0, 1.0, 1.0, 10.0], 2, [0, 0, 0, 0], ready=[3, 0, 1, 2]) == 10.0


def test_a_play_starts_from_the_present_state():
    # a (task 0) runs until 5; b waits for it and takes 2; c is done; d was cancelled.
    state = [R, P, D, TaskState.CANCELLED]
    end = finish_time([0, 0, 0, 0], [], [(5.0, 0)], now=3.0, state=state,
                      waiting=[0, 1, 0, 1], dependents=[(1, 3), (), (), ()],
                      durations=[4.0, 2.0, 1.0, 100.0], slots=2)
    assert end == 7.0  # b from 5 to 7; d never runs


def test_a_play_with_nothing_left_ends_now():
    assert finish_time([], [], [], now=4.0, state=[], waiting=[], dependents=[],
                       durations=[], slots=1) == 4.0


def pays(durations, slots, ranked):
    n = len(durations)
    return ranking_pays(ranked, [0] * n, list(range(n)), [], now=0.0, state=[P] * n,
                        waiting=[0] * n, dependents=[()] * n, durations=durations, slots=slots)


@pytest.mark.parametrize(("n_short", "slots", "expected"), [
    (10, 2, True),  # arrival order ends at 7, the long task first at 6
    (1000, 2, False),  # 502 against 501: less than GAIN of the time left
    (10, 1, False),  # on one slot every order ends at the same time
])
def test_rank_order_is_kept_only_when_it_ends_the_rest_sooner_by_more_than_gain(
    n_short, slots, expected
):
    durations = [1.0] * n_short + [2.0]
    ranked = [1] * n_short + [0]
    assert pays(durations, slots, ranked) is expected


def test_the_gain_asked_for_is_one_percent():
    assert GAIN == 0.01


def test_equal_classes_need_no_play():
    assert not pays([1.0, 5.0], 2, [0, 0])


def _bench_data() -> Path | None:
    env = os.environ.get("CORRAL_BENCH_DATA")
    for data in (REPO.parent / "shared" / "bench", Path(env) if env else None):
        if data is not None and (data / "dags" / "manifest.json").exists():
            return data
    return None


@pytest.mark.slow
def test_every_workload_meets_the_first_run_and_history_targets_in_simulation():
    data = _bench_data()
    if data is None:
        pytest.skip("no benchmark workloads (../shared/bench or $CORRAL_BENCH_DATA)")
    done = subprocess.run(
        [sys.executable, "-m", "bench.simulate", "--check", "--data", str(data)],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "missed" not in done.stderr


def test_with_a_shift_classes_are_keys_that_carry_the_task():
    assert rank_classes([3.0, 1.0, 3.0], None, shift=4) == [0 << 4 | 0, 1 << 4 | 1, 0 << 4 | 2]
    assert rank_classes([1.0, 1.0], [0, 1], shift=4) == [1 << 4 | 0, 0 << 4 | 1]
