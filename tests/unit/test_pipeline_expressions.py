"""Pipeline files: ``matrix:``, ``when:`` and ``${{ tasks.ID }}`` arguments, read and run."""

from __future__ import annotations

import shlex
from textwrap import dedent

import pytest

from corral._errors import PipelineError
from corral._expressions import Condition
from corral._pipeline import parse_pipeline
from corral._spec import ShellCommand, TaskRef


def read(text: str, **kw: object):  # type: ignore[no-untyped-def]
    return parse_pipeline(dedent(text).lstrip("\n"), file="p.yml", check_calls="off", **kw)  # type: ignore[arg-type]


def problems(text: str) -> list[str]:
    with pytest.raises(PipelineError) as info:
        read(text)
    return [f"{p.line}: {p.message}" for p in info.value.problems]


def test_a_matrix_makes_one_task_per_combination_and_dependents_wait_for_all() -> None:
    pipeline = read("""
        tasks:
          test:
            cmd: "pytest --db ${matrix.db} --py=${matrix.python}"
            matrix: {python: ["3.11", "3.12"], db: [pg, "my sql"]}
            env: {PY: "${matrix.python}"}
          report: {cmd: "true", depends_on: [test]}
        """)
    specs = {s.id: s for s in pipeline.dag.specs}
    names = [f"test[python={p},db={d}]" for p in ("3.11", "3.12") for d in ("pg", "my sql")]
    assert list(specs) == [*names, "report"]
    action = specs["test[python=3.12,db=my sql]"].action
    assert isinstance(action, ShellCommand)
    assert action.cmd == f"pytest --db {shlex.quote('my sql')} --py=3.12"  # quoted in a cmd
    assert specs["test[python=3.12,db=my sql]"].env == {"PY": "3.12"}  # as is elsewhere
    assert specs["report"].depends_on == tuple(names)


def test_booleans_in_a_matrix_read_as_the_file_wrote_them() -> None:
    specs = read("tasks: {t: {cmd: 'echo ${matrix.x}', matrix: {x: [true, 2]}}}").dag.specs
    assert [s.id for s in specs] == ["t[x=true]", "t[x=2]"]


def test_a_task_value_argument_is_a_reference_and_a_dependency() -> None:
    pipeline = read("""
        params: {scale: "3"}
        tasks:
          fetch: {call: "m:fetch"}
          total: {call: "m:total", args: ["${{ tasks.fetch }}"],
                  kwargs: {scale: "${{ params.scale }}", many: ["${{ tasks.fetch.value }}"]}}
        """)
    total = {s.id: s for s in pipeline.dag.specs}["total"]
    assert total.args == (TaskRef("fetch"),)
    assert total.kwargs == {"scale": "3", "many": [TaskRef("fetch")]}
    assert total.depends_on == ("fetch",)


def test_a_value_of_a_matrix_task_is_the_list_of_its_tasks_values() -> None:
    pipeline = read("""
        tasks:
          part: {call: "m:part", args: ["${matrix.n}"], matrix: {n: [1, 2]}}
          join: {call: "m:join", args: ["${{ tasks.part }}"]}
        """)
    join = {s.id: s for s in pipeline.dag.specs}["join"]
    assert join.args == ([TaskRef("part[n=1]"), TaskRef("part[n=2]")],)
    assert join.depends_on == ("part[n=1]", "part[n=2]")


def test_when_binds_params_and_depends_on_the_tasks_it_reads() -> None:
    pipeline = read("""
        params: {deploy: "no"}
        tasks:
          test: {cmd: "true"}
          ship:
            cmd: "true"
            when: "${{ params.deploy == 'yes' and tasks.test.state == 'succeeded' }}"
        """, params={"deploy": "yes"})
    ship = {s.id: s for s in pipeline.dag.specs}["ship"]
    assert isinstance(ship.when, Condition)
    assert ship.when.bound["params"] == {"deploy": "yes"}
    assert ship.depends_on == ("test",)


def test_problems_have_lines_and_suggestions() -> None:
    found = problems("""
        params: {deploy: "no"}
        tasks:
          fetch: {call: "m:fetch"}
          sum: {call: "m:sum", args: ["${{ tasks.fecth }}"]}
          a: {cmd: "echo ${matrix.python}"}
          b: {cmd: "true", when: "${{ params.deplyo == 'yes' }}"}
          c: {cmd: "true", when: "${{ __import__('os').system('x') }}"}
          d: {cmd: "true", matrix: {python: []}}
          e: {cmd: "echo ${matrix.pyton}", matrix: {python: [1]}}
          f: {call: "m:f", args: ["${{ tasks.fetch.state }}"]}
        """)
    assert found == [
        "4: task 'sum': tasks.fecth: there is no task 'fecth'",
        "5: task 'a': ${matrix.python}: this task has no matrix:",
        "6: task 'b': when: params.deplyo is not defined (did you mean params.deploy?)",
        "7: task 'c': when: \"__import__('os').system('x')\" is not allowed: an expression "
        "compares values with == != < > in, and combines them with and, or, not",
        "8: task 'd': matrix.python must not be empty, not []",
        "9: task 'e[python=1]': ${matrix.pyton}: the matrix has no 'pyton'",
        "10: task 'f': '${{ tasks.fetch.state }}': an argument takes a task's value whole, "
        "${{ tasks.fetch }}",
    ]


def test_a_matrix_too_large_is_refused_before_it_is_built() -> None:
    values = list(range(101))
    (found,) = problems(f"tasks: {{t: {{cmd: 'true', matrix: {{a: {values}, b: {values}}}}}}}")
    assert "matrix makes 10,201 tasks, more than 10,000" in found
