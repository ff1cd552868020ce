"""corral.mcp._advice, the pure part of the MCP server: suggestions for a graph, analyses of
a run's details. Tables in, whole answers out; no server, no store."""

from __future__ import annotations

from typing import Any

import pytest

from corral._pipeline import parse_pipeline
from corral._plan import durations_of
from corral.mcp._advice import analyse, redundant_edges, suggest


def graph_of(text: str) -> Any:
    return parse_pipeline(text, check_calls="off").dag.validate()


def kinds(text: str, concurrency: int = 2, history: dict[str, float] | None = None
          ) -> dict[str, list[dict[str, Any]]]:
    graph = graph_of(text)
    history = history or {}
    estimated = {s.id: float(s.estimate) for s in graph.specs if s.estimate is not None}
    found, notes = suggest(graph, durations_of(graph, {**history}), concurrency=concurrency,
                           estimated=estimated, history=history)
    assert notes == []
    out: dict[str, list[dict[str, Any]]] = {}
    for s in found:
        out.setdefault(s.kind, []).append(s.as_dict())
    return out


@pytest.mark.parametrize(("tasks", "redundant"), [
    ("a: {cmd: x}\nb: {cmd: x, depends_on: [a]}\nc: {cmd: x, depends_on: [a, b]}",
     [("a", "c")]),
    ("a: {cmd: x}\nb: {cmd: x, depends_on: [a]}\nc: {cmd: x, depends_on: [b]}\n"
     "d: {cmd: x, depends_on: [a, b, c]}", [("a", "d"), ("b", "d")]),
    ("a: {cmd: x}\nb: {cmd: x}\nc: {cmd: x, depends_on: [a, b]}", []),  # a diamond's top
    ("a: {cmd: x}\nb: {cmd: x, depends_on: [a]}\nc: {cmd: x, depends_on: [a]}\n"
     "d: {cmd: x, depends_on: [b, c]}", []),
])
def test_redundant_edges_are_those_another_path_implies(
        tasks: str, redundant: list[tuple[str, str]]) -> None:
    text = "tasks:\n" + "\n".join(f"  {line}" for line in tasks.splitlines())
    assert sorted(redundant_edges(graph_of(text))) == redundant


def test_a_resource_held_whole_by_independent_tasks_serialises_them() -> None:
    found = kinds("resources: {db: 2}\ntasks:\n"
                  "  x: {cmd: x, resources: {db: 2}, estimate: 3}\n"
                  "  y: {cmd: x, resources: {db: 1}, estimate: 4}\n"
                  "  z: {cmd: x, resources: {db: 1}, estimate: 5}\n"
                  "  after: {cmd: x, resources: {db: 2}, depends_on: [x, y, z], estimate: 1}\n")
    (serial,) = found["serialising_resource"]
    # y and z fit side by side; x fits with neither; 'after' waits for all anyway.
    assert serial["tasks"] == ["x", "y", "z"]
    assert serial["expected_gain_s"] == 3 + 4 + 5 - 5
    assert serial["detail"]["capacity"] == 2
    assert "x request all of it" in serial["message"]


def test_a_chain_longer_than_the_spread_work_bounds_the_makespan() -> None:
    found = kinds("tasks:\n  a: {cmd: x, estimate: 2}\n  b: {cmd: x, depends_on: [a], "
                  "estimate: 2}\n  c: {cmd: x, depends_on: [b], estimate: 2}\n"
                  "  side: {cmd: x, estimate: 2}\n", concurrency=2)
    (chain,) = found["long_chain"]
    assert chain["tasks"] == ["a", "b", "c"]
    assert chain["expected_gain_s"] == 6 - 8 / 2
    assert "concurrency_above_width" not in found


def test_concurrency_above_the_width_and_below_what_the_graph_can_use() -> None:
    wide = "tasks:\n" + "".join(f"  t{i}: {{cmd: x, estimate: 1}}\n" for i in range(8))
    above = kinds("tasks:\n  a: {cmd: x, estimate: 1}\n  b: {cmd: x, estimate: 1}\n",
                  concurrency=6)
    assert above["concurrency_above_width"][0]["detail"] == {"concurrency": 6, "width": 2}
    below = kinds(wide, concurrency=2)
    (more,) = below["concurrency_below_graph"]
    assert more["detail"] == {"concurrency": 2, "suggested": 8}
    assert more["expected_gain_s"] == 8 / 2 - 1


def test_a_long_task_on_the_critical_path_is_worth_splitting_and_guesses_are_named() -> None:
    found = kinds("tasks:\n  a: {cmd: x, estimate: 1}\n  big: {cmd: x, depends_on: [a], "
                  "estimate: 10}\n  c: {cmd: x, depends_on: [big], estimate: 1}\n"
                  "  d: {cmd: x, estimate: 1}\n  guess: {cmd: x}\n", concurrency=4)
    assert [s["tasks"] for s in found["split_task"]] == [["big"]]
    assert found["split_task"][0]["expected_gain_s"] == 5
    assert found["missing_estimate"][0]["tasks"] == ["guess"]


def test_an_estimate_far_from_history_is_named() -> None:
    found = kinds("tasks:\n  a: {cmd: x, estimate: 1}\n  b: {cmd: x, estimate: 1}\n",
                  history={"a": 9.0, "b": 1.5})
    assert [s["tasks"] for s in found["estimate_off"]] == [["a"]]


def attempt(duration: float) -> dict[str, Any]:
    return {"duration_s": duration}


def test_analysis_of_a_run_names_what_bounded_it() -> None:
    # a (2 s) then b (3 s, after one failed attempt of 1 s); c (1 s) beside them; 2 slots.
    details = {
        "run_id": "r1", "pipeline": "p", "status": "succeeded", "duration_s": 6.5,
        "tasks": {
            "a": {"state": "succeeded", "attempts": [attempt(2)], "started_s": 0.0,
                  "span_s": 2.0, "duration_s": 2.0, "error": None},
            "b": {"state": "succeeded", "attempts": [attempt(1), attempt(3)],
                  "started_s": 2.5, "span_s": 4.0, "duration_s": 3.0, "error": None},
            "c": {"state": "succeeded", "attempts": [attempt(1)], "started_s": 0.0,
                  "span_s": 1.0, "duration_s": 1.0, "error": None},
        },
    }
    got = analyse(details, {"a": (), "b": ("a",), "c": ()}, 2, buckets=2)
    assert got["realised_critical_path"] == ["a", "b"]
    assert got["slack_s"] == {"a": 0.0, "b": 0.0, "c": 4.0}
    assert got["longest_chain_s"] == 5.0
    assert got["work_s"] == 2 + 1 + 3 + 1
    assert got["lower_bound_s"] == 5.0
    assert got["gap_to_lower_bound_s"] == 1.5
    assert got["retried"] == {"b": 2}
    assert got["failed"] == {}
    assert [b["busy_slots"] for b in got["utilisation"]] == [
        round((2 + 1 + 0.75) / 3.25, 3), round(3.25 / 3.25, 3)]


def test_many_redundant_edges_are_listed_up_to_a_bound() -> None:
    from corral.mcp._advice import MAX_LISTED

    n = MAX_LISTED + 10
    text = "tasks:\n  t0: {cmd: x, estimate: 1}\n  t1: {cmd: x, depends_on: [t0], estimate: 1}\n"
    text += "".join(f"  t{i}: {{cmd: x, depends_on: [t{i - 1}, t{i - 2}], estimate: 1}}\n"
                    for i in range(2, n + 2))
    graph = graph_of(text)
    found, notes = suggest(graph, durations_of(graph), concurrency=1, estimated={},
                           history={})
    assert len([s for s in found if s.kind == "redundant_edge"]) == MAX_LISTED
    assert notes == [f"{n} redundant edges: the first {MAX_LISTED} are listed"]
