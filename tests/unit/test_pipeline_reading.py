"""Reading pipeline text: JSON by a JSON parser, YAML by the YAML 1.2 core schema, and the
limits that keep hostile files from hanging or exhausting memory.

Every YAML test runs twice: on libyaml's C parser and on PyYAML's pure-Python one, which must
behave the same.
"""

from __future__ import annotations

import json
import math
from textwrap import dedent

import pytest

import corral._pipeline_text as text_module
from corral import DAG
from corral._errors import PipelineError, Problem, ValidationError
from corral._pipeline import parse_pipeline


@pytest.fixture(params=["libyaml", "python"], autouse=True)
def yaml_parser(request, monkeypatch):
    """Each test once with libyaml's parser, once with the pure-Python fallback."""
    if request.param == "python":
        monkeypatch.setattr(text_module, "_C_PARSER", None)
    elif text_module._C_PARSER is None:
        pytest.skip("PyYAML was built without libyaml")
    return request.param


# Reading is what is tested here: call: targets (m:f) are not checked.
def problems_of(text: str, *, fmt: str | None = None) -> list[Problem]:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, file="p", fmt=fmt, check_calls="off")
    return info.value.problems


def only_problem(text: str, **kwargs) -> Problem:
    problems = problems_of(text, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


def kwargs_of(text: str, *, fmt: str | None = None) -> dict:
    [spec] = parse_pipeline(text, fmt=fmt, check_calls="off").dag.specs
    return dict(spec.kwargs)


# --------------------------------------------------------------------------- numbers
def test_a_json_number_arrives_as_the_number_json_says():
    doc = {"tasks": {"a": {"call": "m:f", "kwargs": {
        "s": 3e-05, "e": 1e3, "neg": -2.5E-3, "i": 7, "big": 12345678901234567890,
        "zero": 0, "t": True, "f": False, "n": None, "text": "3e-05",
        "esc": "a\\/b\u00e9\U0001F600",
    }}}}
    kwargs = kwargs_of(json.dumps(doc), fmt="json")
    assert kwargs == doc["tasks"]["a"]["kwargs"]
    types = [type(kwargs[k]) for k in ("s", "e", "neg", "i", "big")]
    assert types == [float, float, float, int, int]


def test_a_json_timeout_in_exponent_form_is_a_number():
    [spec] = parse_pipeline('{"tasks": {"a": {"cmd": "x", "timeout": 1e3}}}', fmt="json").dag.specs
    assert spec.timeout == 1000.0


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("3e-05", 3e-05), ("1e3", 1000.0), ("-1.5E+2", -150.0), (".5", 0.5), ("1.", 1.0),
        ("+12", 12), ("-7", -7), ("012", 12), ("0o17", 15), ("0x1F", 31),
        (".inf", math.inf), ("-.Inf", -math.inf),
        ("true", True), ("False", False), ("TRUE", True),
        ("null", None), ("~", None), ("", None), ("Null", None),
        # YAML 1.1 spellings that the core schema reads as text:
        ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("y", "y"),
        ("1_000", "1_000"), ("1:30", "1:30"), ("2024-01-02", "2024-01-02"), ("0b101", "0b101"),
        ("nan", "nan"), ("1e", "1e"), ("'1e3'", "1e3"), ('"true"', "true"),
    ],
)
def test_yaml_plain_scalars_follow_the_yaml_1_2_core_schema(written, value):
    kwargs = kwargs_of(f"tasks:\n  a:\n    call: m:f\n    kwargs: {{v: {written}}}\n")
    assert kwargs["v"] == value
    assert type(kwargs["v"]) is type(value)


def test_yaml_nan_is_read_as_a_float_in_arguments():
    assert math.isnan(kwargs_of("tasks: {a: {call: 'm:f', kwargs: {v: .NaN}}}")["v"])


def test_yaml_options_in_exponent_form_are_numbers():
    [spec] = parse_pipeline("tasks:\n  a: {cmd: x, timeout: 1e3, retry_delay: 5e-1}\n").dag.specs
    assert (spec.timeout, spec.retry.delay) == (1000.0, 0.5)


def test_yes_is_not_a_boolean_any_more():
    problem = only_problem("tasks:\n  a: {cmd: x, allow_failure: yes}\n")
    assert problem.message == "task 'a': allow_failure must be true or false, not 'yes'"
    [spec] = parse_pipeline("tasks:\n  a: {cmd: x, env: {DEBUG: on}}\n").dag.specs
    assert spec.env == {"DEBUG": "on"}


# --------------------------------------------------------------------------- tags
@pytest.mark.parametrize(
    ("written", "value"),
    [("!!float 1", 1.0), ("!!float '2.5'", 2.5), ("!!int '7'", 7), ("!!str 12", "12"),
     ("!!str true", "true"), ("!!bool 'false'", False), ("!!null ''", None), ("! 12", "12"),
     ("!!seq [1]", [1]), ("!!map {k: 1}", {"k": 1}),
     ("!<tag:yaml.org,2002:int> '3'", 3)],
)
def test_core_schema_tags_are_allowed(written, value):
    assert kwargs_of(f"tasks:\n  a:\n    call: m:f\n    kwargs: {{v: {written}}}\n")["v"] == value


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ('!!float "x"', "'x' is not a valid !!float"),
        ("!!int 1.5", "'1.5' is not a valid !!int"),
        ("!!bool yes", "'yes' is not a valid !!bool"),
        ("!!null 0", "'0' is not a valid !!null"),
        ("!!map [1]", "!!map cannot tag a sequence"),
        ("!!seq {a: 1}", "!!seq cannot tag a mapping"),
        ("!!int [1]", "!!int cannot tag a sequence"),
        ("!!binary aGVsbG8=", "tag !!binary is not allowed"),
        ("!!timestamp 2024-01-01", "tag !!timestamp is not allowed"),
        ("!!set {a: null}", "tag !!set is not allowed"),
        ("!!python/object/apply:os.system ['true']", "tag !!python/object/apply:os.system is not"),
        ("!custom 1", "tag !custom is not allowed"),
    ],
)
def test_other_tags_and_bad_tagged_values_are_problems_with_a_line(written, message):
    problem = only_problem(f"tasks:\n  a:\n    call: m:f\n    kwargs: {{v: {written}}}\n")
    assert message in problem.message
    assert problem.line == 4
    assert problem.file == "p"


# --------------------------------------------------------------------------- aliases
def billion_laughs(levels: int = 9) -> str:
    lines = ['x-lol0: &lol0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"x-lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "use",
    [
        "a: {call: 'm:f', kwargs: {v: *lol9}}",
        "a: {call: 'm:f', args: [*lol9]}",
        "a: {cmd: x, env: {V: *lol9}}",
        "a: {cmd: x, description: *lol9}",
        "a: {cmd: x, depends_on: *lol9}",
        "a: {cmd: x, tags: *lol9}",
    ],
)
def test_an_alias_bomb_is_refused_with_its_line(use):
    text = billion_laughs() + "tasks:\n  " + use + "\n"
    problem = only_problem(text)
    assert "aliases expand" in problem.message
    assert problem.line == 7  # where the expansion passes the limit: the 6th level


def test_an_alias_bomb_in_params_is_refused():
    problem = only_problem(billion_laughs() + "params: {p: *lol9}\ntasks: {a: {cmd: x}}\n")
    assert "aliases expand" in problem.message
    assert problem.line == 7


def test_an_alias_bomb_of_merges_is_refused():
    lines = ["x-m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}"]
    for i in range(1, 9):
        lines.append(f"x-m{i}: &m{i} [" + ", ".join([f"*m{i - 1}"] * 10) + "]")
    problem = only_problem("\n".join(lines) + "\ntasks: {a: {call: 'm:f', kwargs: {<<: *m1}}}\n")
    assert "aliases expand" in problem.message


def test_a_recursive_alias_is_refused():
    problem = only_problem("tasks:\n  a:\n    call: m:f\n    args: &x [1, *x]\n")
    assert "refers to itself" in problem.message
    assert problem.line == 4


def test_an_alias_to_an_unknown_anchor_is_a_yaml_error():
    problem = only_problem("tasks:\n  a: {cmd: *nope}\n")
    assert "nope" in problem.message
    assert problem.line == 2


def test_ordinary_aliases_and_merges_are_fine_even_many_of_them():
    body = "".join(f"  t{i}: {{<<: *base, kwargs: {{i: {i}}}}}\n" for i in range(2000))
    text = "x-base: &base {call: 'm:f', retries: 2, tags: [a, b, c], env: {A: '1'}}\ntasks:\n"
    specs = parse_pipeline(text + body, check_calls="off").dag.specs
    assert len(specs) == 2000
    assert specs[-1].retry.retries == 2
    assert specs[-1].kwargs == {"i": 1999}


def test_merge_of_a_list_of_mappings_earlier_ones_win():
    [spec] = parse_pipeline(dedent("""\
        x-a: &a {cmd: from-a, retries: 1}
        x-b: &b {cmd: from-b, retries: 2, timeout: 9}
        tasks:
          t: {<<: [*a, *b], priority: 3}
    """)).dag.specs
    assert (spec.action.cmd, spec.retry.retries, spec.timeout, spec.priority) == (
        "from-a", 1, 9.0, 3)


def test_a_merge_of_something_else_than_a_mapping_is_a_problem():
    problem = only_problem("tasks:\n  t: {<<: 3, cmd: x}\n")
    assert "<<" in problem.message
    assert problem.line == 2


# --------------------------------------------------------------------------- nesting
@pytest.mark.parametrize(
    "depth", [101, 1000, 100_000],
)
def test_deep_flow_nesting_is_refused(depth):
    text = "tasks:\n  a: {call: 'm:f', kwargs: {v: " + "[" * depth + "]" * depth + "}}\n"
    problem = only_problem(text)
    assert "nested more than 100 levels" in problem.message
    assert problem.line == 2


def test_deep_block_nesting_is_refused():
    lines = ["tasks:", "  a:", "    call: m:f", "    kwargs:"]
    lines += [" " * (6 + i) + f"k{i}:" for i in range(1000)]
    problem = only_problem("\n".join(lines) + " 1\n")
    assert "nested more than 100 levels" in problem.message
    assert problem.line == 102  # the 101st level: the mapping that starts with k97


@pytest.mark.parametrize("depth", [101, 1000, 100_000])
def test_deep_json_nesting_is_refused(depth):
    text = '{"tasks": {"a": {"call": "m:f", "kwargs": {"v": ' + "[" * depth + "]" * depth + "}}}}"
    problem = only_problem(text, fmt="json")
    assert "nested more than 100 levels" in problem.message
    assert problem.line == 1


def test_nesting_within_the_limit_is_fine():
    deep: list = []
    for _ in range(90):
        deep = [deep]
    assert kwargs_of(json.dumps({"tasks": {"a": {"call": "m:f", "kwargs": {"v": deep}}}}),
                     fmt="json")["v"] == deep


# --------------------------------------------------------------------------- huge numbers
@pytest.mark.parametrize("key", ["concurrency", "timeout-in-task", "kwargs"])
@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_integers_with_thousands_of_digits_are_refused(key, fmt):
    big = "9" * 5000
    if key == "concurrency":
        doc = f'{{"concurrency": {big}, "tasks": {{"a": {{"cmd": "x"}}}}}}'
    elif key == "timeout-in-task":
        doc = f'{{"tasks": {{"a": {{"cmd": "x", "timeout": {big}}}}}}}'
    else:
        doc = f'{{"tasks": {{"a": {{"call": "m:f", "kwargs": {{"n": {big}}}}}}}}}'
    problem = only_problem(doc, fmt=fmt)
    assert "5000 digits" in problem.message
    assert problem.line == 1
    assert len(str(problem)) < 300


def test_a_float_option_from_a_huge_integer_is_a_problem_not_a_crash():
    problem = only_problem("tasks:\n  a: {cmd: x, timeout: " + "9" * 400 + "}\n")
    assert problem.message.startswith("task 'a': timeout must be a finite number")
    assert "..." in problem.message


def test_a_json_number_too_large_for_a_float_is_a_problem():
    problem = only_problem('{"tasks": {"a": {"call": "m:f",\n "kwargs": {"x": 1e400}}}}',
                           fmt="json")
    assert "1e400" in problem.message
    assert problem.line == 2


@pytest.mark.parametrize("word", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(word):
    problem = only_problem('{"tasks": {"a": {"cmd": "x",\n "timeout": ' + word + "}}}", fmt="json")
    assert word in problem.message
    assert "JSON" in problem.message
    assert problem.line == 2


# --------------------------------------------------------------------------- NaN and infinity
@pytest.mark.parametrize(
    ("option", "value"),
    [("timeout", ".nan"), ("timeout", ".inf"), ("heartbeat", ".nan"), ("retry_backoff", ".nan"),
     ("retry_delay", ".nan"), ("retry_max_delay", ".inf"), ("retry_jitter", ".nan"),
     ("estimate", ".nan"), ("estimate", ".inf"), ("resources", "{cpu: .nan}"),
     ("resources", "{cpu: .inf}")],
)
def test_nan_and_infinity_options_are_refused(option, value):
    problem = only_problem(f"tasks:\n  a:\n    cmd: x\n    {option}: {value}\n")
    assert "finite" in problem.message
    assert problem.line == 4


@pytest.mark.parametrize(
    ("text", "line"),
    [("resources: {cpu: .nan}\ntasks: {a: {cmd: x}}\n", 1),
     ("defaults: {timeout: .nan}\ntasks: {a: {cmd: x}}\n", 1),
     ("resources: {gpu: -.inf}\ntasks: {a: {cmd: x}}\n", 1)],
)
def test_nan_and_infinity_in_the_header_are_refused(text, line):
    problem = only_problem(text)
    assert "finite" in problem.message
    assert problem.line == line


@pytest.mark.parametrize(
    ("value", "message"),
    [("-1", "estimate must be a finite number of seconds >= 0, not -1.0"),
     ("soon", "estimate must be a number, not 'soon'")],
)
def test_a_bad_estimate_is_a_problem(value, message):
    assert message in only_problem(f"tasks:\n  a: {{cmd: x, estimate: {value}}}\n").message


@pytest.mark.parametrize(
    "options",
    [{"timeout": math.nan}, {"heartbeat": math.inf}, {"retry_backoff": math.nan},
     {"retry_delay": math.inf}, {"retry_max_delay": math.nan}, {"retry_jitter": math.nan},
     {"estimate": math.nan}, {"estimate": -1.0}, {"resources": {"cpu": math.nan}},
     {"timeout": 10**400}],
)
def test_the_python_api_refuses_nan_and_infinity(options):
    dag = DAG("d")

    @dag.task(**options)
    def f() -> None: ...

    f()
    with pytest.raises(ValidationError) as info:
        dag.validate()
    [problem] = info.value.problems
    assert problem.task == "f"


@pytest.mark.parametrize("amount", [math.nan, math.inf, -1.0, 10**400, "two"])
def test_a_dag_capacity_must_be_a_finite_number(amount):
    dag = DAG("d", resources={"gpu": amount})
    dag.shell("a", "true")
    with pytest.raises(ValidationError) as info:
        dag.validate()
    [problem] = info.value.problems
    assert "gpu" in problem.message


@pytest.mark.parametrize("concurrency", [math.nan, 0, -1, 1.5, "4", True])
def test_a_dag_concurrency_must_be_a_whole_number(concurrency):
    with pytest.raises(ValidationError, match="concurrency"):
        DAG("d", concurrency=concurrency)


# --------------------------------------------------------------------------- messages
def test_a_value_quoted_in_a_message_is_cut_short():
    problem = only_problem("tasks:\n  a: {cmd: x, retries: '" + "y" * 10_000 + "'}\n")
    assert len(problem.message) < 200
    assert problem.message.endswith("...")


# --------------------------------------------------------------------------- JSON reading
def test_json_duplicate_keys_are_reported_with_lines():
    text = ('{"tasks": {\n "a": {"cmd": "x",\n  "cmd": "y"},\n "b": {"cmd": "z"},\n'
            ' "b": {"cmd": "w"}}}')
    problems = problems_of(text, fmt="json")
    assert [(p.line, p.message) for p in problems] == [
        (3, "task 'a': duplicate key 'cmd'"),
        (5, "duplicate task id 'b'"),
    ]


def test_a_json_file_is_read_as_json_only(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"tasks": {"a": {"cmd": "x"}}} # a comment\n')
    from corral._pipeline import load_pipeline

    with pytest.raises(PipelineError) as info:
        load_pipeline(path)
    [problem] = info.value.problems
    assert problem.message.startswith("invalid JSON")
    assert problem.line == 1


def test_json_problems_have_lines_found_after_the_fact():
    text = json.dumps({"name": "n", "tasks": {f"t{i}": {"cmd": "x"} for i in range(50)}
                       | {"bad": {"cmd": "x", "retries": "two", "depends_on": ["t1", "tt"]}}},
                      indent=2)
    problems = problems_of(text, fmt="json")
    lines = text.splitlines()
    assert [(p.message, lines[p.line - 1].strip()) for p in problems] == [
        ("task 'bad' depends on unknown task 'tt'", '"bad": {'),
        ("task 'bad': retries must be a whole number, not 'two'", '"retries": "two",'),
    ]


def test_a_guessed_format_falls_back_to_yaml_for_a_flow_mapping():
    pipeline = parse_pipeline("{tasks: {a: {cmd: x}}}")
    assert [s.id for s in pipeline.dag.specs] == ["a"]


# --------------------------------------------------------------------------- suggestions
def test_did_you_mean_is_bounded_and_says_where_it_stopped():
    n = 3000
    body = "".join(f"  t{i}: {{cmd: x, depends_on: [u{i}]}}\n" for i in range(n))
    problems = problems_of("tasks:\n" + body)
    assert len(problems) == n
    hinted = [p for p in problems if p.hint and p.hint.startswith("did you mean")]
    assert 0 < len(hinted) < n
    stop = [p for p in problems if p.hint and "no more suggestions" in p.hint]
    assert len(stop) == 1
