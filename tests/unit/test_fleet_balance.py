"""The fleet's balancing strategies, by table: candidates in, the sequence of choices out; and
how queues declare them (``queues:`` in a file, ``DAG(queues=...)``)."""

from __future__ import annotations

import random

import pytest

from corral import DAG
from corral._errors import PipelineError, ValidationError
from corral._pipeline import parse_pipeline
from corral.fleet._balance import STRATEGIES, BalanceState, Candidate, choose, parse_queues

A, B, C = Candidate("a", 4), Candidate("b", 2), Candidate("c", 1)


def run(strategy: str, candidates: list[Candidate], n: int, seed: int = 0) -> list[str | None]:
    state = BalanceState(random.Random(seed))
    return [choose(strategy, candidates, state) for _ in range(n)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_candidate_means_the_shared_queue(strategy):
    assert choose(strategy, [], BalanceState()) is None


def test_pull_never_chooses():
    assert run("pull", [A, B], 3) == [None, None, None]


@pytest.mark.parametrize(("candidates", "expected"), [
    ([A, B, C], ["a", "b", "c", "a", "b", "c", "a"]),
    ([C, A, B], ["a", "b", "c", "a", "b", "c", "a"]),  # by id, whatever the order given
    ([B], ["b", "b", "b", "b", "b", "b", "b"]),
])
def test_round_robin_takes_each_in_turn(candidates, expected):
    assert run("round_robin", candidates, 7) == expected


def test_round_robin_goes_on_after_the_last_when_workers_come_and_go():
    state = BalanceState()
    assert choose("round_robin", [A, B, C], state) == "a"
    assert choose("round_robin", [A, B, C], state) == "b"
    assert choose("round_robin", [A, C], state) == "c"  # b left: the next after it
    assert choose("round_robin", [A, B], state) == "a"  # c left: wrap around


@pytest.mark.parametrize(("candidates", "expected"), [
    ([Candidate("a", 4, load=2), Candidate("b", 2, load=0)], "b"),
    ([Candidate("a", 4, load=2), Candidate("b", 2, load=1)], "a"),  # 2/4 == 1/2: by id
    ([Candidate("a", 4, load=3), Candidate("b", 2, load=1)], "b"),  # 3/4 > 1/2
    ([Candidate("b", 1, load=0), Candidate("a", 8, load=1)], "b"),  # 0 beats 1/8
    ([Candidate("a", 2, load=5), Candidate("b", 8, load=9)], "b"),  # over capacity too
])
def test_least_loaded_takes_the_fewest_for_its_capacity(candidates, expected):
    assert choose("least_loaded", candidates, BalanceState()) == expected


def test_random_is_the_seeded_generators_and_covers_every_candidate():
    first, second = run("random", [A, B, C], 60, seed=7), run("random", [C, B, A], 60, seed=7)
    assert first == second  # the seed decides, not the order of the candidates
    assert set(first) == {"a", "b", "c"}


@pytest.mark.parametrize(("weights", "expected"), [
    ({"a": 5, "b": 1, "c": 1}, ["a", "a", "b", "a", "c", "a", "a"]),
    ({"a": 1, "b": 1}, ["a", "b", "a", "b"]),
    ({"a": 2, "b": 1}, ["a", "b", "a", "a", "b", "a"]),
    ({"a": 0, "b": 1}, ["b", "b", "b"]),
])
def test_weighted_is_smooth_weighted_round_robin(weights, expected):
    candidates = [Candidate(w, 1, weight=n) for w, n in weights.items()]
    assert run("weighted", candidates, len(expected)) == expected


def test_weighted_forgets_a_worker_that_left():
    state = BalanceState()
    two = [Candidate("a", 1, weight=3), Candidate("b", 1, weight=1)]
    assert [choose("weighted", two, state) for _ in range(2)] == ["a", "a"]
    assert choose("weighted", two[1:], state) == "b"
    assert set(state.current) == {"b"}


def test_an_unknown_strategy_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown balancing strategy 'fastest'"):
        choose("fastest", [A], BalanceState())


# ---------------------------------------------------------------------- declarations

@pytest.mark.parametrize(("given", "expected"), [
    ({"gpu": {"strategy": "least_loaded"}}, {"gpu": "least_loaded"}),
    ({"gpu": "weighted", "cpu": {}}, {"gpu": "weighted", "cpu": "pull"}),  # shorthand; default
    (None, {}),
])
def test_queues_are_declared_by_strategy(given, expected):
    assert parse_queues(given) == (expected, [])


@pytest.mark.parametrize(("given", "problem"), [
    ({"gpu": {"strategy": "least_lodaed"}},
     ("queues: gpu: unknown strategy 'least_lodaed'", "did you mean 'least_loaded'?")),
    ({"gpu": {"strategy": 3}}, ("queues: gpu: unknown strategy 3",
                                "one of pull, round_robin, random, least_loaded, weighted")),
    ({"gpu": {"stratgy": "random"}}, ("queues: gpu: unknown key 'stratgy'",
                                      "a queue declares its strategy and its pool breaker: "
                                      "{strategy: least_loaded, breaker: {failures: 3}}")),
    ({"a b": "pull"}, ("queues: 'a b' is not a queue name",
                       "letters, digits, '_', '.', '-'; up to 100")),
])
def test_a_bad_declaration_says_what_and_how_to_fix_it(given, problem):
    assert parse_queues(given) == ({}, [problem])


def test_a_dag_carries_its_queues_strategies_and_refuses_unknown_ones():
    dag = DAG(queues={"gpu": {"strategy": "round_robin"}})
    dag.add(print, id="x")
    assert dag.validate().balance == {"gpu": "round_robin"}
    bad = DAG(queues={"gpu": {"strategy": "roundrobin"}})
    bad.add(print, id="x")
    with pytest.raises(ValidationError) as info:
        bad.validate()
    (problem,) = info.value.problems
    assert problem.hint == "did you mean 'round_robin'?"


def test_a_pipeline_files_queues_and_their_problems_with_lines():
    text = "queues:\n  gpu: {strategy: least_loaded}\ntasks:\n  a: {cmd: 'true', queue: gpu}\n"
    assert parse_pipeline(text, file="p.yaml").dag.validate().balance == {"gpu": "least_loaded"}
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text.replace("least_loaded", "least-loaded"), file="p.yaml")
    (problem,) = info.value.problems
    assert (problem.line, problem.hint) == (2, "did you mean 'least_loaded'?")
    assert "queues.gpu.strategy" in problem.message
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text.replace("gpu:", "'g u':", 1), file="p.yaml")
    (problem,) = info.value.problems
    assert problem.line == 2
    assert problem.message.startswith("queues.g u is not a queue name")
