"""Fuzzing the pipeline loader: mutated valid pipelines (YAML and JSON text) either load or
raise :class:`PipelineError` / :class:`ParameterError`, never another exception."""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral._errors import ParameterError, PipelineError
from corral._pipeline import Pipeline, parse_pipeline

YAML = """\
name: fuzz
concurrency: 4
resources: {cpu: 2, gpu: 1}
defaults: {retries: 1, timeout: 60}
env: {A: "1"}
params: {target: dist}
x-base: &base {retries: 2, tags: [a, b]}
tasks:
  lint: {cmd: "ruff check ${target}", estimate: 1.5}
  test:
    <<: *base
    cmd: pytest -q
    depends_on: [lint]
    retry_delay: 1e-1
  stats: {call: "m:f", args: [1, 2.5, null, true], kwargs: {n: 3, s: 3e-05}, resources: {cpu: 1}}
  build: {cmd: "make", depends_on: [test, stats], priority: 10, trigger_rule: all_done}
"""

JSON = json.dumps({
    "name": "fuzz", "concurrency": 4, "resources": {"cpu": 2},
    "defaults": {"retries": 1, "timeout": 60}, "params": {"target": "dist"},
    "tasks": {
        "lint": {"cmd": "ruff check ${target}", "estimate": 1.5},
        "test": {"cmd": "pytest", "depends_on": ["lint"], "retry_delay": 1e-1},
        "stats": {"call": "m:f", "args": [1, 2.5, None, True], "kwargs": {"s": 3e-05}},
    },
}, indent=1)

# Values that a parser or the loader's limits must refuse cleanly, put where a value goes.
VALUES = [
    ".nan", ".inf", "-.inf", "NaN", "Infinity", "1e400", "9" * 5000, "-" + "9" * 5000,
    '!!float "x"', "!!int 1.5", "!!bool yes", "!!binary aGk=", "!!python/name:os.system",
    "!!map [1]", "!!seq {a: 1}", "*nope", "&a [*a]", "[" * 1200 + "]" * 1200,
    "{a: " * 300 + "1" + "}" * 300, '"' + "x" * 100_000 + '"', "[]", "{}", "null", "0x1F",
    "3e-05", "-1", "0", "true", "yes", "2024-01-01", "'${target}'", "'${nope}'",
]

# Fragments that mean something to a YAML or JSON parser, or to the loader's limits.
TOKENS = [
    "&a ", "*a", "<<: ", "!!float ", "!!int ", "!!binary ", "!!python/name:os.system ", "!x ",
    "[", "]", "{", "}", ",", ":", "- ", "? ", "|", ">", "#", "'", '"', "\\", "\t", "\n", "  ",
    ".nan", ".inf", "-.inf", "NaN", "Infinity", "1e400", "9" * 5000, "0x", "0o", "~", "null",
    "true", "yes", "%YAML 1.1\n---\n", "---\n", "...\n", "\x00", "\ufeff", "\u2028", "é",
    "${target}", "$${x}", "depends_on: ", "tasks: ", "timeout: ", "retries: ", "[" * 200,
]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str]:
    fmt = draw(st.sampled_from(["yaml", "json"]))
    text = YAML if fmt == "yaml" else JSON
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["value", "value", "insert", "delete", "replace",
                                     "duplicate", "text"]))
        if kind == "value":  # the value after one of the keys, replaced
            ends = [m.end() for m in re.finditer(r": ", text)]
            if ends:
                at = draw(st.sampled_from(ends))
                end = re.compile(r"[,}\]\n]").search(text, at)
                text = text[:at] + draw(st.sampled_from(VALUES)) + text[end.start() if end
                                                                        else len(text):]
        elif kind == "insert":
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)):]
        elif kind == "replace":
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at + draw(st.integers(1, 8)):]
        elif kind == "duplicate":
            lines = text.splitlines(keepends=True)
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            text = "".join(lines)
        else:
            text = text[:at] + draw(st.text(max_size=12)) + text[at:]
    return fmt, text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.sampled_from([None, {"target": "x"}, {"nope": "1"}]))
def test_a_mutated_pipeline_loads_or_is_a_pipeline_error(case, params):
    fmt, text = case
    problems: list = []
    try:
        result = parse_pipeline(text, file="fuzz", fmt=fmt, params=params, check_calls="off")
    except PipelineError as e:
        problems = e.problems
    except ParameterError:
        pass
    else:
        assert isinstance(result, Pipeline)
        result.dag.validate()
    assert all(len(str(p)) < 1000 for p in problems)  # no value quoted in full
