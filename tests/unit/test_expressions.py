"""``${{ ... }}``: what parses, what is refused, and what it evaluates to."""

from __future__ import annotations

from typing import Any

import pytest

from corral._expressions import Condition, ExpressionError, TaskView, parse, whole

TASKS = {
    "test": TaskView("succeeded", {"coverage": 91, "files": ["a", "b"]}),
    "unit-add": TaskView("failed", None),
    "fetch": TaskView("succeeded", [1, 2, 3]),
}
NAMES: dict[str, Any] = {"params": {"deploy": "yes", "env": "prod"}, "env": {"CI": "true"},
                         "matrix": {"python": "3.12"}}


def value(text: str) -> Any:
    return parse(text).evaluate(NAMES, TASKS.__getitem__)


@pytest.mark.parametrize(("text", "expected"), [
    ("params.deploy == 'yes'", True),
    ("params.deploy == 'yes' and tasks.test.state == 'succeeded'", True),
    ("params.deploy != 'yes' or tasks.test.state == 'failed'", False),
    ("not tasks.test.state == 'failed'", True),
    ("tasks.unit-add.state == 'failed'", True),  # dashes written as they are
    ("tasks['unit-add'].state", "failed"),
    ("tasks.test.value.coverage >= 90", True),
    ("tasks.test.value['files'][1]", "b"),
    ("'b' in tasks.test.value.files", True),
    ("tasks.fetch", [1, 2, 3]),
    ("tasks.fetch.value", [1, 2, 3]),
    ("env.CI == 'true' and env.UNSET == ''", True),
    ("matrix.python in ['3.11', '3.12']", True),
    ("1 < 2 <= 2", True),
    ("-1 < 0", True),
    ("null == null and true != false", True),
    ("'a-b.c' == 'a-b.c'", True),  # dashes inside quotes are text
    ("params.deploy and 'x'", "x"),  # and/or give an operand, as Python's do
])
def test_evaluates(text: str, expected: Any) -> None:
    assert value(text) == expected


@pytest.mark.parametrize(("text", "says"), [
    ("__import__('os').system('true')", "not allowed"),
    ("params.x.__class__", "nothing inside"),
    ("tasks.test.value.__class__", ""),  # a key lookup at evaluation, never an attribute
    ("open('/etc/passwd')", "not allowed"),
    ("1 + 2", "not allowed"),
    ("-params.x", "negative numbers"),
    ("[x for x in tasks]", "not allowed"),
    ("lambda: 1", "not allowed"),
    ("os", "unknown name 'os'"),
    ("tasks", "needs a name"),
    ("tasks.test.error", ".state and .value"),
    ("a ==", "not an expression"),
    ("", "empty"),
    ("x" * 3000, "longer than"),
    ("params.x is None", "not a comparison"),
])
def test_refuses(text: str, says: str) -> None:
    if text == "tasks.test.value.__class__":
        with pytest.raises(ExpressionError, match="has no"):
            value(text)
        return
    with pytest.raises(ExpressionError, match=says.replace(".", r"\.").replace("[", r"\[")):
        parse(text)


def test_tasks_read_become_known_and_task_value_is_exact() -> None:
    expression = parse("tasks.a.state == 'x' or tasks['b-c'].value > 1 or tasks.a.value")
    assert expression.tasks == ("a", "b-c")
    assert parse("tasks.a").task_value() == "a"
    assert parse("tasks.a.value").task_value() == "a"
    assert parse("tasks.a.value.x").task_value() is None
    assert parse("tasks.a.state").task_value() is None


def test_whole_only_matches_one_expression_filling_the_text() -> None:
    assert whole("${{ tasks.a }}") == " tasks.a "
    assert whole("  ${{tasks.a}} ") == "tasks.a"
    assert whole("x ${{ tasks.a }}") is None
    assert whole("${ a }") is None
    assert whole(3) is None


def test_a_condition_binds_what_is_known_early_and_reads_env_late() -> None:
    condition = Condition(parse("params.deploy == 'yes' and env.STAGE == 'prod'"),
                          {"params": {"deploy": "yes"}})
    assert condition.holds({"STAGE": "prod"}, TASKS.__getitem__)
    assert not condition.holds({}, TASKS.__getitem__)


def test_comparing_what_cannot_be_compared_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="cannot compare"):
        value("tasks.fetch.value < 3")
