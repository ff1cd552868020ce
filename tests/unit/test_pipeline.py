"""Pipeline files: reading, validating, parameters, and every problem located by file and line."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from textwrap import dedent

import pytest
import yaml

import corral
from corral._errors import ParameterError, PipelineError, Problem, ValidationError
from corral._options import TASK_OPTIONS
from corral._pipeline import (
    Pipeline,
    load_pipeline,
    parse_params,
    parse_pipeline,
    pipeline_schema,
)
from corral._spec import CallRef, ShellCommand, TaskSpec, TriggerRule

REPO = Path(__file__).resolve().parents[2]

EXAMPLE = """\
name: ci
concurrency: 4                 # max tasks running at once (default: CPU count)
resources: {cpu: 2, gpu: 1}    # capacity; memory_mb defaults to the machine's
defaults: {retries: 0, timeout: 600}
env: {PYTHONUNBUFFERED: "1"}
params: {target: dist}         # optional: declared parameters with defaults
tasks:
  lint:  {cmd: "ruff check ."}
  test:  {cmd: "pytest -q", depends_on: [lint], retries: 2, retry_delay: 1, timeout: 300}
  stats: {call: "tests.helpers.jobs:compute", kwargs: {n: 3}, executor: process,
          resources: {cpu: 1}}
  build: {cmd: "python -m build --outdir ${target}", depends_on: [test, stats], priority: 10}
  clean: {cmd: "rm -rf tmp", depends_on: [build], trigger_rule: all_done}
"""


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(text: str, *, fmt: str | None = None, params=None) -> list[Problem]:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, file="p.yaml", fmt=fmt, params=params)
    return info.value.problems


def only_problem(text: str, **kwargs) -> Problem:
    problems = problems_of(text, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


def without_source(pipeline: Pipeline) -> list[TaskSpec]:
    return [spec.evolve(source=None) for spec in pipeline.dag.specs]


def cmd_of(spec: TaskSpec) -> str:
    assert isinstance(spec.action, ShellCommand)
    return spec.action.cmd


# --------------------------------------------------------------------------- valid files
def test_the_full_example_loads_into_specs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    path = write(tmp_path, EXAMPLE)
    pipeline = load_pipeline(path)

    assert pipeline.name == "ci"
    assert pipeline.concurrency == 4
    assert pipeline.path == str(path)
    assert pipeline.params == {"target": "dist"}
    dag = pipeline.dag
    assert dag.name == "ci"
    assert dag.concurrency == 4
    assert dag.resources == {"cpu": 2.0, "gpu": 1.0}
    assert dag.env == {"PYTHONUNBUFFERED": "1"}
    specs = {spec.id: spec for spec in dag.specs}
    assert list(specs) == ["lint", "test", "stats", "build", "clean"]

    assert specs["lint"].action == ShellCommand("ruff check .")
    assert specs["lint"].timeout == 600.0  # from defaults
    assert specs["lint"].executor_name == "shell"
    assert specs["test"].depends_on == ("lint",)
    assert specs["test"].retry.retries == 2
    assert specs["test"].retry.delay == 1.0
    assert specs["test"].timeout == 300.0
    assert specs["stats"].action == CallRef("tests.helpers.jobs:compute")
    assert specs["stats"].kwargs == {"n": 3}
    assert specs["stats"].executor_name == "process"
    assert specs["stats"].resources == {"cpu": 1.0}
    assert specs["build"].action == ShellCommand("python -m build --outdir dist")
    assert specs["build"].depends_on == ("test", "stats")
    assert specs["build"].priority == 10
    assert specs["clean"].trigger_rule is TriggerRule.ALL_DONE
    # Each task is located at the line of its key.
    assert {t: s.source for t, s in specs.items()} == {
        "lint": (str(path), 8),
        "test": (str(path), 9),
        "stats": (str(path), 10),
        "build": (str(path), 12),
        "clean": (str(path), 13),
    }
    # The call target is real, and the returned pipeline validates.
    fn = specs["stats"].action.resolve()
    assert fn(**specs["stats"].kwargs) == 3
    graph = dag.validate()
    assert graph.ids == ("lint", "test", "stats", "build", "clean")


def test_load_pipeline_is_exported_lazily():
    assert corral.load_pipeline is load_pipeline


def test_json_is_equivalent_to_yaml(tmp_path):
    data = yaml.safe_load(EXAMPLE)
    from_yaml = load_pipeline(write(tmp_path, EXAMPLE))
    text = json.dumps(data, indent=2)
    from_json = load_pipeline(write(tmp_path, text, "pipeline.json"))
    assert without_source(from_json) == without_source(from_yaml)
    assert from_json.params == from_yaml.params
    assert from_json.concurrency == from_yaml.concurrency
    assert from_json.dag.env == from_yaml.dag.env
    assert from_json.dag.resources == from_yaml.dag.resources
    # A valid JSON file is read without lines; a problem in one is shown at its line.
    assert from_json.dag.specs[0].source == (str(tmp_path / "pipeline.json"), None)
    broken = text.replace('"lint": {', '"lint": {"retries": "two", ', 1)
    with pytest.raises(PipelineError) as info:
        load_pipeline(write(tmp_path, broken, "broken.json"))
    [problem] = info.value.problems
    lint_line = broken.splitlines().index('    "lint": {"retries": "two", ') + 1
    assert (problem.file, problem.line) == (str(tmp_path / "broken.json"), lint_line)


def test_json_indented_with_tabs_still_has_line_numbers(tmp_path):
    text = '{\n\t"tasks": {\n\t\t"a": {"cmd": "echo", "retries": "two"}\n\t}\n}\n'
    with pytest.raises(PipelineError) as info:
        load_pipeline(write(tmp_path, text, "p.json"))
    [problem] = info.value.problems
    assert problem.line == 3
    assert problem.message == "task 'a': retries must be a whole number, not 'two'"


def test_a_list_of_tasks_is_the_same_as_a_mapping():
    as_list = parse_pipeline(dedent("""\
        tasks:
          - id: lint
            cmd: ruff check .
          - id: test
            cmd: pytest -q
            depends_on: lint
    """))
    as_mapping = parse_pipeline("tasks:\n  lint: {cmd: ruff check .}\n"
                                "  test: {cmd: pytest -q, depends_on: [lint]}\n")
    assert without_source(as_list) == without_source(as_mapping)
    assert [s.source for s in as_list.dag.specs] == [("<string>", 2), ("<string>", 4)]


def test_depends_on_and_tags_accept_a_single_string():
    pipeline = parse_pipeline("tasks:\n  a: {cmd: x}\n  b: {cmd: y, depends_on: a, tags: t}\n")
    b = pipeline.dag.specs[1]
    assert b.depends_on == ("a",)
    assert b.tags == ("t",)


def test_call_with_args_kwargs_env_cwd_and_description():
    pipeline = parse_pipeline(dedent("""\
        tasks:
          job:
            description: anything at all
            call: tests.helpers.jobs:echo
            args: [1, "two", {three: 3}]
            kwargs: {four: [4]}
            env: {N: 5, FLAG: true}
            cwd: /tmp
    """))
    [spec] = pipeline.dag.specs
    assert spec.args == (1, "two", {"three": 3})
    assert type(spec.args[2]) is dict  # plain containers, not the loader's
    assert spec.kwargs == {"four": [4]}
    assert spec.env == {"N": "5", "FLAG": "true"}
    assert spec.cwd == "/tmp"
    assert spec.executor_name == "thread"


def test_timeout_null_overrides_a_default():
    pipeline = parse_pipeline("defaults: {timeout: 5}\ntasks:\n  a: {cmd: x, timeout: null}\n"
                              "  b: {cmd: y}\n")
    assert [s.timeout for s in pipeline.dag.specs] == [None, 5.0]


def test_heartbeat_is_an_option_a_default_and_null_overrides_it():
    pipeline = parse_pipeline("defaults: {heartbeat: 30}\ntasks:\n  a: {cmd: x, heartbeat: null}\n"
                              "  b: {cmd: y}\n  c: {cmd: z, heartbeat: 0.5, timeout: 60}\n")
    specs = pipeline.dag.specs
    assert [(s.heartbeat, s.timeout) for s in specs] == [(None, None), (30.0, None), (0.5, 60.0)]


def test_name_defaults_to_the_file_stem(tmp_path):
    assert load_pipeline(write(tmp_path, "tasks: {a: {cmd: x}}\n", "nightly.yml")).name == "nightly"
    assert parse_pipeline("tasks: {a: {cmd: x}}\n").name == "pipeline"


def test_merge_keys_are_not_duplicates_and_x_keys_are_ignored():
    pipeline = parse_pipeline(dedent("""\
        x-base: &base {cmd: make, retries: 1, timeout: 30}
        tasks:
          a: {<<: *base, retries: 3}
          b:
            <<: *base
    """))
    a, b = pipeline.dag.specs
    assert (a.retry.retries, a.timeout, a.action) == (3, 30.0, ShellCommand("make"))
    assert (b.retry.retries, b.timeout) == (1, 30.0)


# --------------------------------------------------------------------------- files and syntax
def test_missing_file(tmp_path):
    with pytest.raises(PipelineError) as info:
        load_pipeline(tmp_path / "nope.yaml")
    [problem] = info.value.problems
    assert problem.file == str(tmp_path / "nope.yaml")
    assert problem.message == "no such file"
    assert problem.line is None  # there is no line to point at


def test_a_directory_is_not_a_pipeline(tmp_path):
    with pytest.raises(PipelineError) as info:
        load_pipeline(tmp_path)
    [problem] = info.value.problems
    assert problem.file == str(tmp_path)
    assert "is a directory" in problem.message


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_file(tmp_path, text):
    with pytest.raises(PipelineError) as info:
        load_pipeline(write(tmp_path, text))
    [problem] = info.value.problems
    assert (problem.message, problem.line) == ("the file is empty", 1)


@pytest.mark.parametrize(
    ("text", "kind", "line"),
    [("- a\n- b\n", "a list", 1), ("just text\n", "a string", 1), ("\n\n42\n", "int", 1)],
)
def test_the_top_level_must_be_a_mapping(text, kind, line):
    problem = only_problem(text)
    assert problem.message == f"the top level must be a mapping with a tasks: key, not {kind}"
    assert problem.line == line


def test_yaml_syntax_error_names_file_and_line_without_a_traceback(tmp_path):
    path = write(tmp_path, "tasks:\n  a: {cmd: echo\n  b: {cmd: x}\n")
    with pytest.raises(PipelineError) as info:
        load_pipeline(path)
    [problem] = info.value.problems
    assert problem.file == str(path)
    assert problem.line == 3
    assert problem.message.startswith("invalid YAML: ")
    assert "started on line 2" in (problem.hint or "")
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    assert f"{path}:3: invalid YAML" in str(info.value)


def test_yaml_tabs_get_a_hint():
    problem = only_problem("tasks:\n\ta: {cmd: echo}\n")
    assert problem.line == 2
    assert problem.hint == "indent YAML with spaces, not tabs"


def test_json_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, '{\n  "tasks": {\n    "a": {"cmd": "echo"\n  }\n', "p.json")
    with pytest.raises(PipelineError) as info:
        load_pipeline(path)
    [problem] = info.value.problems
    assert problem.message.startswith("invalid JSON: ")
    assert (problem.file, problem.line) == (str(path), 5)


def test_unknown_format_is_a_programming_error():
    with pytest.raises(ValueError, match="fmt must be one of yaml, json"):
        parse_pipeline("tasks: {}", fmt="toml")


# --------------------------------------------------------------------------- structure
def test_unknown_keys_are_reported_at_their_line_with_did_you_mean():
    problems = problems_of(dedent("""\
        name: ci
        concurency: 2
        defaults:
          retrys: 1
        tasks:
          a:
            cmd: echo
            retires: 2
            dependson: [b]
          b: {cmd: echo}
    """))
    assert [(p.line, p.task, p.message, p.hint) for p in problems] == [
        (2, None, "unknown key 'concurency'", "did you mean 'concurrency'?"),
        (4, None, "unknown key 'defaults.retrys'", "did you mean 'retries'?"),
        (8, "a", "task 'a': unknown key 'retires'", "did you mean 'retries'?"),
        (9, "a", "task 'a': unknown key 'dependson'", "did you mean 'depends_on'?"),
    ]
    assert {p.file for p in problems} == {"p.yaml"}


def test_an_id_key_in_the_mapping_form_is_explained():
    problem = only_problem("tasks:\n  a:\n    id: b\n    cmd: x\n")
    assert (problem.line, problem.message) == (3, "task 'a': unknown key 'id'")
    assert problem.hint == "in a mapping of tasks the key is the id"


def test_duplicate_task_ids_in_a_mapping_are_reported():
    problem = only_problem("tasks:\n  a: {cmd: one}\n  b: {cmd: two}\n  a: {cmd: three}\n")
    assert (problem.line, problem.task, problem.message) == (4, "a", "duplicate task id 'a'")


def test_a_shadowed_task_is_checked_too():
    problems = problems_of("tasks:\n  a: {cmd: one, retries: -1}\n  a: {cmd: two}\n")
    assert [(p.line, p.message) for p in problems] == [
        (2, "task 'a': retries must be a whole number >= 0, not -1"),
        (3, "duplicate task id 'a'"),
    ]


def test_duplicate_task_ids_are_reported_when_the_header_is_broken():
    problems = problems_of("resources: {gpu: x}\ntasks:\n  a: {cmd: one}\n  a: {cmd: two}\n")
    assert [(p.line, p.message, p.hint) for p in problems] == [
        (1, "resources.gpu must be a number, not 'x'", None),
        (4, "duplicate task id 'a'", "first defined on line 3"),
    ]


def test_duplicate_task_ids_in_a_list_are_reported():
    problem = only_problem("tasks:\n  - {id: a, cmd: one}\n  - {id: a, cmd: two}\n")
    assert (problem.line, problem.task, problem.message) == (3, "a", "duplicate task id 'a'")


def test_a_key_written_twice_in_a_task_is_reported():
    problem = only_problem("tasks:\n  a:\n    cmd: one\n    retries: 1\n    cmd: two\n")
    assert (problem.line, problem.task) == (5, "a")
    assert problem.message == "task 'a': duplicate key 'cmd'"
    assert problem.hint == "first written on line 3"


def test_retries_as_a_word_is_reported_at_the_key():
    problem = only_problem("tasks:\n  a:\n    cmd: echo\n    retries: two\n")
    assert (problem.line, problem.task) == (4, "a")
    assert problem.message == "task 'a': retries must be a whole number, not 'two'"


def test_a_number_in_quotes_is_not_a_number():
    problem = only_problem('concurrency: "4"\ntasks: {a: {cmd: x}}\n')
    assert (problem.line, problem.message) == (1, "concurrency must be a whole number, not '4'")


def test_nested_values_are_located_at_their_own_line():
    problems = problems_of(dedent("""\
        resources:
          gpu: -1
        tasks:
          a:
            cmd: x
            env:
              OK: yes
              BAD: [1]
            tags: [fine, 2]
    """))
    assert [(p.line, p.message) for p in problems] == [
        (2, "resources.gpu must be >= 0, not -1"),
        (8, "task 'a': env.BAD must be a string, not [1]"),
        (9, "task 'a': tags[1] must be a string, not 2"),
    ]


def test_depends_on_of_the_wrong_type():
    problem = only_problem("tasks:\n  a:\n    cmd: x\n    depends_on: 5\n")
    assert problem.line == 4
    assert problem.message == (
        "task 'a': depends_on must be a string or a list of strings, not 5")


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("{cmd: x, call: 'm:f'}", 2, "task 'a' has both cmd and call"),
        ("{retries: 1}", 2, "task 'a' has neither cmd nor call"),
        ("", 2, "task 'a' is empty"),
        ("echo hi", 2, "task 'a' must be a mapping of keys, not a string"),
        ("\n    call: nomodule", 3, "task 'a': call 'nomodule' is not of the form "
                                    "'module:function'"),
        ("\n    cmd: x\n    args: [1]", 4, "task 'a': args only go with call, not cmd"),
    ],
)
def test_the_action_must_be_exactly_one_cmd_or_call(body, line, message):
    problem = only_problem(f"tasks:\n  a: {body}\n")
    assert (problem.line, problem.task, problem.message) == (line, "a", message)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("name: x\n", 1, "there is no tasks: section"),
        ("tasks:\n", 1, "tasks: is empty"),
        ("name: x\ntasks: []\n", 2, "tasks: is empty"),
        ("name: x\ntasks: 3\n", 2,
         "tasks must be a mapping of ids to tasks, or a list of tasks, not int"),
        ("tasks:\n  - {cmd: x}\n", 2, "task #1 needs an id (a non-empty string)"),
        ("tasks:\n  - {id: a, cmd: x}\n  - 7\n", 3,
         "task #2 must be a mapping with an id, not int"),
        ("tasks:\n  3: {cmd: x}\n", 2, "task id 3 must be a non-empty string"),
    ],
)
def test_the_tasks_section_must_hold_tasks(text, line, message):
    problem = only_problem(text)
    assert (problem.line, problem.message) == (line, message)


# --------------------------------------------------------------------------- graph problems
def test_unknown_dependency_with_did_you_mean():
    problem = only_problem("tasks:\n  build: {cmd: x}\n  test: {cmd: y, depends_on: [biuld]}\n")
    assert (problem.line, problem.task, problem.file) == (3, "test", "p.yaml")
    assert problem.message == "task 'test' depends on unknown task 'biuld'"
    assert problem.hint == "did you mean 'build'?"


def test_a_cycle_is_printed_as_a_path():
    problem = only_problem(dedent("""\
        tasks:
          a: {cmd: x, depends_on: c}
          b: {cmd: x, depends_on: a}
          c: {cmd: x, depends_on: b}
    """))
    assert problem.message == "cycle: a -> b -> c -> a"
    assert (problem.line, problem.task) == (2, "a")


def test_a_negative_timeout_is_reported_at_the_task():
    problem = only_problem("tasks:\n  a: {cmd: x}\n  b:\n    cmd: y\n    timeout: -1\n")
    assert (problem.line, problem.task) == (3, "b")
    assert problem.message == "task 'b': timeout must be a finite number of seconds > 0, not -1.0"


@pytest.mark.parametrize(
    ("value", "line", "message"),
    [
        ("0", 3, "task 'b': heartbeat must be a finite number of seconds > 0, not 0.0"),
        ("-1", 3, "task 'b': heartbeat must be a finite number of seconds > 0, not -1.0"),
        ("abc", 5, "task 'b': heartbeat must be a number, not 'abc'"),
    ],
)
def test_a_bad_heartbeat_is_reported_at_the_task(value, line, message):
    problem = only_problem(f"tasks:\n  a: {{cmd: x}}\n  b:\n    cmd: y\n    heartbeat: {value}\n")
    assert (problem.file, problem.line, problem.task) == ("p.yaml", line, "b")
    assert problem.message == message


def test_resources_over_capacity_are_reported_at_the_task():
    problems = problems_of(dedent("""\
        resources: {gpu: 1}
        tasks:
          train: {cmd: x, resources: {gpu: 2}}
          other: {cmd: y, resources: {gpus: 1}}
    """))
    assert [(p.line, p.task, p.message, p.hint) for p in problems] == [
        (3, "train", "task 'train' requests gpu=2 but the capacity is 1, so it could never run",
         "ask for less, or raise the capacity: resources: {gpu: 2} at the top of the pipeline "
         "file, or DAG(resources={'gpu': 2})"),
        (4, "other", "task 'other' requests resource 'gpus', which has no capacity",
         "did you mean 'gpu'?"),
    ]


def test_unknown_executor_and_trigger_rule_come_from_the_graph():
    problems = problems_of(
        "tasks:\n  a: {call: 'tests.helpers.jobs:compute', executor: proces}\n"
        "  b: {cmd: x, trigger_rule: al_done}\n")
    assert [(p.line, p.hint) for p in problems] == [
        (2, "did you mean 'process'?"), (3, "did you mean 'all_done'?")]


def test_every_problem_is_reported_at_once_in_file_order():
    problems = problems_of(dedent("""\
        concurrency: 0
        tasks:
          a:
            cmd: x
            timeout: -1
            retries: two
          b: {cmd: y, depends_on: [aa]}
          a: {cmd: z}
    """))
    assert [(p.line, p.message) for p in problems] == [
        (1, "concurrency must be >= 1, not 0"),
        (3, "task 'a': timeout must be a finite number of seconds > 0, not -1.0"),
        (6, "task 'a': retries must be a whole number, not 'two'"),
        (7, "task 'b' depends on unknown task 'aa'"),
        (8, "duplicate task id 'a'"),
    ]
    assert all(p.file == "p.yaml" for p in problems)


def test_pipeline_error_is_a_validation_error():
    with pytest.raises(ValidationError):
        parse_pipeline("tasks:\n  a: {cmd: x, depends_on: a}\n")


# --------------------------------------------------------------------------- parameters
def test_a_parameter_value_in_cmd_is_one_shell_word():
    malicious = "x; rm -rf / $(whoami) `id` 'q' \"d\""
    pipeline = parse_pipeline(EXAMPLE, params={"target": malicious})
    build = next(s for s in pipeline.dag.specs if s.id == "build")
    words = shlex.split(cmd_of(build))
    assert words == ["python", "-m", "build", "--outdir", malicious]
    assert pipeline.params == {"target": malicious}


def test_parameters_are_raw_outside_cmd():
    pipeline = parse_pipeline(dedent("""\
        params: {dir: "a b", n: 3}
        env: {TOP: "${dir}"}
        tasks:
          a:
            call: tests.helpers.jobs:echo
            args: ["${dir}", ["${n}"]]
            kwargs: {where: {d: "${dir}"}}
            env: {D: "${dir}/x"}
            cwd: "/tmp/${dir}"
    """))
    [spec] = pipeline.dag.specs
    assert spec.args == ("a b", ["3"])
    assert spec.kwargs == {"where": {"d": "a b"}}
    assert spec.env == {"D": "a b/x"}
    assert spec.cwd == "/tmp/a b"
    assert pipeline.dag.env == {"TOP": "a b"}
    assert pipeline.params == {"dir": "a b", "n": "3"}


def test_dollar_dollar_escapes_a_reference():
    pipeline = parse_pipeline(
        "params: {x: 1}\ntasks:\n  a: {cmd: 'echo $${x} ${x} $$HOME', env: {E: '$${x}'}}\n")
    [spec] = pipeline.dag.specs
    assert cmd_of(spec) == "echo ${x} 1 $$HOME"
    assert spec.env == {"E": "${x}"}


def test_without_a_params_section_unknown_references_are_left_alone():
    pipeline = parse_pipeline("tasks:\n  a: {cmd: 'echo ${HOME} ${who}'}\n",
                              params={"who": "me you"})
    assert cmd_of(pipeline.dag.specs[0]) == "echo ${HOME} 'me you'"
    assert pipeline.params == {"who": "me you"}


def test_without_a_params_section_an_unused_parameter_is_an_error():
    with pytest.raises(ParameterError, match=r"unknown parameter 'whom'.*did you mean 'who'"):
        parse_pipeline("tasks:\n  a: {cmd: 'echo ${who}'}\n", params={"whom": "x"})


def test_an_undeclared_reference_is_a_problem_when_params_are_declared():
    problems = problems_of(dedent("""\
        params: {target: dist}
        tasks:
          a:
            cmd: make
            env: {OUT: "${targte}"}
          b:
            cmd: echo ${HOME}
    """))
    assert [(p.line, p.task, p.message, p.hint) for p in problems] == [
        (5, "a", "task 'a': unknown parameter ${targte}", "did you mean 'target'?"),
        (7, "b", "task 'b': unknown parameter ${HOME}",
         "declare it under params:, or write $${HOME} for a literal ${HOME}"),
    ]


def test_passing_an_undeclared_parameter_is_a_parameter_error():
    with pytest.raises(ParameterError, match=r"unknown parameter 'traget'.*did you mean 'target'"):
        parse_pipeline(EXAMPLE, params={"traget": "x"})


def test_a_parameter_without_default_must_be_passed():
    text = "params: {target: null}\ntasks:\n  a: {cmd: 'echo ${target}'}\n"
    with pytest.raises(ParameterError, match="'target' has no default"):
        parse_pipeline(text)
    pipeline = parse_pipeline(text, params={"target": "t"})
    assert cmd_of(pipeline.dag.specs[0]) == "echo t"


def test_parse_params():
    assert parse_params(["a=1", "b=x=y", "c=", "a=2"]) == {"a": "2", "b": "x=y", "c": ""}
    assert parse_params([]) == {}


@pytest.mark.parametrize("pair", ["novalue", "=x", "a b=1", "1a=2"])
def test_parse_params_rejects_malformed_pairs(pair):
    with pytest.raises(ParameterError, match="parameter"):
        parse_params([pair])


# --------------------------------------------------------------------------- schema
def test_the_json_schema_describes_the_file_format():
    schema = pipeline_schema()
    json.dumps(schema)  # serialisable as is
    assert set(schema["properties"]) == {
        "name", "description", "concurrency", "resources", "defaults", "env", "params",
        "python_path", "tasks", "rate_limits", "circuit_breakers", "queues"}
    assert schema["additionalProperties"] is False
    task = schema["$defs"]["Task"]
    assert set(task["properties"]) == {
        *TASK_OPTIONS, "cmd", "call", "args", "kwargs", "description", "matrix"}
    assert task["additionalProperties"] is False
    assert task["properties"]["retries"]["description"] == TASK_OPTIONS["retries"]
    assert "id" in schema["$defs"]["ListTask"]["required"]
    assert set(schema["$defs"]["TaskOptions"]["properties"]) == set(TASK_OPTIONS)


def test_an_undeclared_resource_is_not_taken_for_a_typo_of_a_different_one():
    # gpu is one letter from cpu, but a GPU is no misspelt CPU: say how to declare it.
    problem = only_problem("tasks:\n  train: {cmd: x, resources: {gpu: 5}}\n")
    assert problem.message == "task 'train' requests resource 'gpu', which has no capacity"
    assert "did you mean" not in (problem.hint or "")
    assert "resources: {gpu: 5}" in (problem.hint or "")
    # A real typo of a declared (or built-in) resource still gets its suggestion.
    assert only_problem("tasks:\n  a: {cmd: x, resources: {cpus: 1}}\n").hint == \
        "did you mean 'cpu'?"
    assert only_problem("tasks:\n  a: {cmd: x, resources: {memory: 1}}\n").hint == \
        "did you mean 'memory_mb'?"


def test_a_request_over_capacity_says_how_to_raise_it():
    problem = only_problem("resources: {gpu: 1}\ntasks:\n  a: {cmd: x, resources: {gpu: 2}}\n")
    assert problem.hint is not None
    assert "resources: {gpu: 2}" in problem.hint


def test_the_python_api_hint_names_the_dag_argument():
    dag = corral.DAG()
    dag.add(lambda: 1, id="a", options={"resources": {"gpu": 2}})
    with pytest.raises(ValidationError) as info:
        dag.validate()
    [problem] = info.value.problems
    assert "DAG(resources={'gpu': 2})" in (problem.hint or "")
