"""How ready tasks are ordered on a first run: task kinds, durations learned per kind, the
re-rank and its budget, FIFO among equal ranks, and what estimates may be.

The scheduler is driven by hand with a fake clock (times are the numbers passed in); no
threads, no sleeps."""

from __future__ import annotations

import math

import pytest

from corral._errors import ValidationError
from corral._estimates import OnlineEstimates
from corral._graph import build_graph
from corral._kinds import command_template, id_stem, task_kinds
from corral._options import make_spec
from corral._plan import estimate_sources, is_seconds, lower_bound, usable_history
from corral._scheduler import RERANK_COST_S, RERANK_SHARE, Scheduler
from corral._spec import CallRef, ShellCommand


def work() -> None:
    """Every task below runs this (one action: kinds differ by their id's stem)."""


def other_work() -> None:
    """A second action."""


def spec(task_id, deps=(), action=work, **options):
    return make_spec(task_id, action, options={"depends_on": list(deps), **options})


def graph(*specs):
    return build_graph(list(specs))


def ids(sched, indices):
    return [sched.graph.ids[i] for i in indices]


def run_one(sched, now, took):
    """Admit one task at ``now`` (concurrency 1) and let it succeed ``took`` later."""
    (i,) = sched.admit(now)
    sched.succeeded(i, now + took)
    return sched.graph.ids[i]


# ------------------------------------------------------------------ kinds


@pytest.mark.parametrize(("task_id", "stem"), [
    ("bowtie2_00000003", "bowtie_"),
    ("mProject_ID0000001", "mProject_ID"),
    ("NFCORE.FASTQC_12", "NFCORE.FASTQC_"),
    ("clean", "clean"),
])
def test_a_stem_is_an_id_without_its_digits(task_id, stem):
    assert id_stem(task_id) == stem


def test_a_command_template_keeps_program_and_flags_and_abstracts_numbers_and_files():
    a = command_template("bowtie2 -p 4 -x ref/hg38 -U sample_3.fq")
    b = command_template("bowtie2 -p 8 -x ref/hg38 -U other.fq")
    assert a == b == "bowtie# -p # -x * -U *"
    assert command_template("samtools sort x.bam") != command_template("samtools index x.bam")


def test_kinds_are_action_and_stem_and_families_are_the_action():
    specs = [
        spec("align_1"), spec("align_2"),                    # one kind
        spec("sort_1"),                                       # same action, another stem
        spec("align_3", action=other_work),                   # same stem, another action
        make_spec("x_1", CallRef("pkg.mod:fn")), make_spec("x_2", CallRef("pkg.mod:fn")),
        make_spec("c_1", ShellCommand("gzip -9 a/1.txt")),
        make_spec("c_2", ShellCommand("gzip -9 b/2.txt")),
        make_spec("c_3", ShellCommand("gunzip b/2.txt.gz")),
    ]
    kinds, families = task_kinds(specs)
    assert kinds[0] == kinds[1]
    assert len({kinds[0], kinds[2], kinds[3]}) == 3
    assert families[0] == families[1] == families[2] != families[3]
    assert kinds[4] == kinds[5]
    assert kinds[6] == kinds[7] != kinds[8]
    assert set(kinds) == set(range(max(kinds) + 1))  # dense: the scheduler indexes lists


# ------------------------------------------------------------------ learned estimates


def test_a_first_measure_of_a_kind_with_tasks_left_asks_for_a_re_rank():
    # kinds: a a b ; family: all one
    est = OnlineEstimates([0, 0, 1], [0, 0, 0], [None, None, None])
    assert est.durations() == [1.0, 1.0, 1.0]  # nothing known: every task weighs the same
    assert est.learn(0, 4.0) is True  # kind a has a task left
    assert est.durations() == [4.0, 4.0, 4.0]  # b: its family's mean so far
    assert est.learn(2, 2.0) is False  # the last of kind b, and its family is measured
    assert est.durations() == [4.0, 4.0, 2.0]


def test_a_change_below_the_threshold_does_not_ask_for_a_re_rank():
    est = OnlineEstimates([0, 0, 0, 0], [0, 0, 0, 0], [None] * 4)
    est.learn(0, 10.0)
    est.durations()
    assert est.learn(1, 11.0) is False  # mean 10.5: 5% off what the ranks assumed
    assert est.learn(2, 20.0) is True  # mean 13.7: 37% off


def test_history_wins_and_is_refined_by_how_its_kind_ran_today():
    # Both tasks of one kind have a history of 10 s; the first took 20 s today.
    est = OnlineEstimates([0, 0], [0, 0], [10.0, 10.0])
    assert est.durations() == [10.0, 10.0]
    assert est.learn(0, 20.0) is True
    assert est.durations()[1] == 20.0  # the history, scaled by today's ratio (2x)


def test_a_negative_duration_teaches_nothing():
    est = OnlineEstimates([0, 0], [0, 0], [None, None])
    assert est.learn(0, -1.0) is False
    assert est.durations() == [1.0, 1.0]


def test_learning_is_off_when_it_could_not_change_the_order():
    assert not OnlineEstimates.worth_learning([0, 0, 0], [None, None, None])
    assert not OnlineEstimates.worth_learning([0, 0], [1.0, 2.0])
    assert OnlineEstimates.worth_learning([0, 0], [1.0, None])
    assert OnlineEstimates.worth_learning([0, 1], [None, None])


# ------------------------------------------------------------------ the scheduler's order


def roots():
    """Five independent tasks, structurally equal: two kinds, short (s) and long (l)."""
    return graph(spec("s_1"), spec("l_1"), spec("s_2"), spec("s_3"), spec("l_2"))


def test_without_estimates_equal_ranks_start_in_arrival_order():
    # b_1 becomes ready (its dependency ended) after c_1, yet is defined first: arrival wins
    # among equal ranks.
    g = graph(spec("b_1", ["a"]), spec("a"), spec("c_1"), spec("d", ["b_1"]))
    s = Scheduler(g, concurrency=1, learn=False)
    assert ids(s, s.admit(0)) == ["a"]  # rank 3 (a -> b_1 -> d) beats c_1's 1
    s.succeeded(g.index["a"], 1)
    assert ids(s, s.admit(1)) == ["b_1"]  # rank 2
    s.succeeded(g.index["b_1"], 2)
    # d (rank 1, arrived now) and c_1 (rank 1, ready since the start): c_1 first.
    assert ids(s, s.admit(2)) == ["c_1"]


def after_l_1():
    """l_1 and s_1 at the roots; four s tasks and l_2 wait for l_1 (arrival: s first)."""
    return graph(spec("l_1"), spec("s_1"), *(spec(f"s_{k}", ["l_1"]) for k in range(2, 6)),
                 spec("l_2", ["l_1"]))


def test_a_learned_duration_moves_a_task_up_when_that_ends_the_run_sooner():
    g = after_l_1()
    s = Scheduler(g, concurrency=2)
    # (From t = 1 s on, the run is long enough to learn: the first admit makes the learner.)
    assert ids(s, s.admit(1.0)) == ["l_1", "s_1"]
    assert s.learner is not None
    s.succeeded(g.index["s_1"], 2.0)  # s takes 1 s
    assert s.admit(2.0) == []
    s.succeeded(g.index["l_1"], 11.0)  # l takes 10 s
    # Arrival order would end at 23 (s_2 s_3 | s_4 s_5 | l_2), l_2 first at 21.
    assert ids(s, s.admit(11.0)) == ["l_2", "s_2"]
    assert s.ranked_reranks == 1


def test_a_learned_duration_that_would_not_end_the_run_sooner_keeps_arrival_order():
    # On one slot every order ends at the same time: ranks would reorder for nothing.
    g = after_l_1()
    s = Scheduler(g, concurrency=1)
    order = [run_one(s, 1.0, 10.0)]  # l_1
    order += [run_one(s, t, 1.0) for t in (11.0, 12.0, 13.0, 14.0, 15.0)]
    assert order == ["l_1", "s_1", "s_2", "s_3", "s_4", "s_5"]
    assert s.reranks >= 1
    assert s.ranked_reranks == 0


def test_without_learning_the_same_run_keeps_arrival_order():
    s = Scheduler(roots(), concurrency=1, learn=False)
    order = [run_one(s, t, 1.0) for t in range(5)]
    assert order == ["s_1", "l_1", "s_2", "s_3", "l_2"]
    assert s.learner is None
    assert s.reranks == 0


def test_re_ranks_are_bounded_by_the_time_that_passed():
    g = roots()
    gap = len(g) * RERANK_COST_S / RERANK_SHARE  # (no edges) the least time between re-ranks
    s = Scheduler(g, concurrency=1)
    assert run_one(s, 0.0, 0.1 * gap) == "s_1"
    assert s.learner is None  # too early: a run this short never pays for task kinds
    assert run_one(s, 1.0 * gap, 0.5 * gap) == "l_1"  # the learner is made at 1 gap
    assert s.learner is not None
    # l is known to be long, but too soon after the last re-rank: arrival order holds.
    assert run_one(s, 1.5 * gap, 0.1 * gap) == "s_2"
    assert s.reranks == 0
    # One gap after the learner was made, the queue is re-ranked (on one slot, ranks would
    # not end the run sooner: arrival order is kept).
    assert run_one(s, 2.0 * gap, 0.1 * gap) == "s_3"
    assert s.reranks == 1
    assert run_one(s, 2.1 * gap, 0.5 * gap) == "l_2"
    assert not s.is_active()


def test_an_attempt_is_timed_from_when_its_executor_says_it_started():
    g = graph(spec("a_1"), spec("a_2"), spec("b_1"))
    s = Scheduler(g, concurrency=1)
    (i,) = s.admit(1.0)  # (long enough into the run to learn: the learner is made)
    s.started(i, s.attempts[i], 5.0)  # waited 4 s in a queue: not the task's own time
    s.succeeded(i, 6.0)
    assert s.learner is not None
    assert s.learner.durations()[g.index["a_2"]] == pytest.approx(1.0)


def test_failed_attempts_teach_nothing():
    g = graph(spec("a_1", retries=1, retry_delay=0, retry_jitter=0), spec("a_2"), spec("b_1"))
    s = Scheduler(g, concurrency=1)
    (i,) = s.admit(1.0)
    assert s.failed(i, 50.0) == []  # a_1 failed after 49 s: it will be retried
    assert run_one(s, 50.0, 1.0) == "a_2"  # ready before a_1's retry
    assert s.learner is not None
    # Kind a_#: what a_2 took, not the mean with a_1's failed attempt (25 s).
    assert s.learner.durations()[g.index["b_1"]] == pytest.approx(1.0)


def test_given_estimates_order_tasks_as_before():
    g = graph(spec("short", estimate=1), spec("long", estimate=1),
              spec("long2", ["long"], estimate=5))
    s = Scheduler(g, concurrency=1)
    assert ids(s, s.admit(0)) == ["long"]


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "soon", True])
def test_the_scheduler_refuses_estimates_that_are_not_seconds(bad):
    g = graph(spec("a"), spec("b"))
    with pytest.raises(ValueError, match="estimates must give each task"):
        Scheduler(g, concurrency=1, estimates=[1.0, bad])
    with pytest.raises(ValueError, match="estimates must give each task"):
        Scheduler(g, concurrency=1, estimates=[1.0])


# ------------------------------------------------------------------ estimates and bounds


@pytest.mark.parametrize(("bad", "message"), [
    (-1, "estimate must be a finite number of seconds >= 0"),
    (math.nan, "estimate must be a finite number"),
    ("soon", "estimate must be a finite number.*not 'soon'"),
])
def test_a_bad_estimate_from_python_is_a_validation_error(bad, message):
    with pytest.raises(ValidationError, match=message):
        graph(spec("a", estimate=bad))


def test_damaged_history_is_left_out():
    good, bad = usable_history({"a": 1.5, "b": -1.0, "c": math.nan, "d": "x", "e": True,
                                "f": 0})
    assert good == {"a": 1.5, "f": 0.0}
    assert sorted(bad) == ["b", "c", "d", "e"]
    assert is_seconds(0.0)
    assert not is_seconds(math.inf)


def test_a_plan_counts_where_its_estimates_come_from():
    g = graph(spec("a", estimate=2), spec("b"), spec("c"))
    assert estimate_sources(g, {"b": 3.0, "a": 9.0}) == {"given": 1, "history": 1, "none": 1}
    assert estimate_sources(g) == {"given": 1, "history": 0, "none": 2}


def test_the_lower_bound_is_the_critical_path_or_the_work_per_slot():
    g = graph(spec("a"), spec("b", ["a"]), spec("c"), spec("d"))
    assert lower_bound(g, [1.0, 2.0, 1.0, 1.0], 4) == 3.0  # the path a -> b
    assert lower_bound(g, [1.0, 2.0, 4.0, 5.0], 1) == 12.0  # all the work on one slot
    assert lower_bound(graph(), [], 2) == 0.0


def test_a_narrower_executor_bounds_the_run_by_its_own_work_per_slot():
    g = graph(spec("a", executor="process"), spec("b", executor="process"),
              spec("c", executor="process"), spec("d"))
    # 5 slots overall, but the process pool runs 2 at once: 3 x 1.5 s on it take >= 2.25 s
    assert lower_bound(g, [1.5, 1.5, 1.5, 1.0], 5) == 1.5
    assert lower_bound(g, [1.5, 1.5, 1.5, 1.0], 5, {"process": 2}) == 2.25
    assert lower_bound(g, [1.5, 1.5, 1.5, 1.0], 5, {"process": 8}) == 1.5  # not narrower


def test_the_realised_critical_path_breaks_ties_of_rounded_end_times_downstream():
    from corral._plan import realised_critical_path

    deps = {"first": [], "second": ["first"], "last": ["first", "second"]}
    # stored times rounded to the millisecond: second and last end "together"
    ends = {"first": 0.001, "second": 0.004, "last": 0.004}
    assert realised_critical_path(ends, deps.__getitem__) == ["first", "second", "last"]
    ends = {"last": 0.004, "second": 0.004, "first": 0.004}  # every one, in any order
    assert realised_critical_path(ends, deps.__getitem__) == ["first", "second", "last"]
    # start + span computed back from a stored history: equal ends differ in the last bits
    ends = {"first": 0.1, "second": 0.1 + 0.2, "last": 0.3}
    assert ends["second"] > ends["last"]
    assert realised_critical_path(ends, deps.__getitem__) == ["first", "second", "last"]
