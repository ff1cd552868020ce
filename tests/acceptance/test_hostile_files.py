"""Hostile and mutated pipeline files through the real ``corral validate``: each one is a clear
error with exit code 2 (never a traceback), in bounded memory, without hanging.

Each case runs in a child whose address space is capped (``RLIMIT_AS``), so a file that makes
the loader balloon fails the test instead of the machine; the timeout is a hang guard only.
"""

from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path

import pytest
from tests.acceptance.conftest import HANG_GUARD_S, cli_env, corral_argv

# Address space of one `corral validate` child. Python, pydantic and click map about 0.3 GiB;
# the largest file here (200,000 tasks) needs well under the 1 GB memory target on top.
ADDRESS_SPACE = 2 * 1024**3


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def validate(tmp_path: Path, name: str, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return subprocess.run(
        corral_argv("validate", str(path)),
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
        preexec_fn=_cap_memory,
    )


def lol(levels: int, *, indent: str = "") -> str:
    """The definitions of a "billion laughs" alias bomb: &lol9 is 10**9 strings."""
    lines = [f'{indent}x-lol0: &lol0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"{indent}x-lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def block_nested(depth: int) -> str:
    lines = ["tasks:", "  a:", "    call: m:f", "    kwargs:"]
    lines += [" " * (6 + i) + f"k{i}:" for i in range(depth)]
    return "\n".join(lines) + " 1\n"


def json_doc(task: str) -> str:
    return '{"tasks": {"a": ' + task + "}}"


BIG = "9" * 5000

# name -> (file name, text, a phrase the message must contain)
CASES: dict[str, tuple[str, str, str]] = {
    **{
        f"alias-bomb-{where}": ("p.yaml", lol(9) + "tasks:\n  a: " + use + "\n", "aliases expand")
        for where, use in {
            "env": "{cmd: x, env: {V: *lol9}}",
            "kwargs": "{call: 'm:f', kwargs: {v: *lol9}}",
            "description": "{cmd: x, description: *lol9}",
            "depends_on": "{cmd: x, depends_on: *lol9}",
            "tags": "{cmd: x, tags: *lol9}",
            "args": "{call: 'm:f', args: *lol9}",
        }.items()
    },
    "alias-bomb-params": ("p.yaml", lol(9) + "params: {p: *lol9}\ntasks: {a: {cmd: x}}\n",
                          "aliases expand"),
    "alias-bomb-small": ("p.yaml", lol(7) + "tasks: {a: {cmd: x, env: {V: *lol7}}}\n",
                         "aliases expand"),
    "recursive-alias": ("p.yaml", "tasks:\n  a: {call: 'm:f', args: &x [1, *x]}\n",
                        "refers to itself"),
    "deep-flow-list": ("p.yaml", "tasks: {a: {call: 'm:f', args: " + nested(1000) + "}}\n",
                       "nested more than 100 levels"),
    "deep-flow-map": ("p.yaml", "tasks: {a: {call: 'm:f', kwargs: " + "{a: " * 1000 + "1"
                      + "}" * 1000 + "}}\n", "nested more than 100 levels"),
    "deep-block": ("p.yaml", block_nested(1000), "nested more than 100 levels"),
    "deep-block-list": ("p.yaml", "tasks:\n  a:\n    call: m:f\n    args:\n"
                        + "".join(" " * (4 + 2 * i) + "-\n" for i in range(1000))
                        + " " * 2004 + "- 1\n", "nested more than 100 levels"),
    "deep-json": ("p.json", json_doc('{"call": "m:f", "args": ' + nested(100_000) + "}"),
                  "nested more than 100 levels"),
    "deep-json-1000": ("p.json", json_doc('{"call": "m:f", "args": ' + nested(1000) + "}"),
                       "nested more than 100 levels"),
    "huge-int-concurrency": ("p.yaml", f"concurrency: {BIG}\ntasks: {{a: {{cmd: x}}}}\n",
                             "5000 digits"),
    "huge-int-timeout": ("p.yaml", f"tasks: {{a: {{cmd: x, timeout: {BIG}}}}}\n", "5000 digits"),
    "huge-int-json": ("p.json", json_doc('{"call": "m:f", "kwargs": {"n": ' + BIG + "}}"),
                      "5000 digits"),
    "huge-float-json": ("p.json", json_doc('{"cmd": "x", "timeout": 1e999}'), "1e999"),
    "int-too-big-for-a-float": ("p.yaml", "tasks: {a: {cmd: x, timeout: " + "9" * 400 + "}}\n",
                                "finite number"),
    "bad-float-tag": ("p.yaml", 'tasks: {a: {cmd: x, timeout: !!float "x"}}\n',
                      "not a valid !!float"),
    "bad-int-tag": ("p.yaml", "tasks: {a: {cmd: x, retries: !!int 1.5}}\n", "not a valid !!int"),
    "python-tag": ("p.yaml", "tasks: {a: {cmd: !!python/object/apply:os.system ['true']}}\n",
                   "is not allowed"),
    "binary-tag": ("p.yaml", "tasks: {a: {call: 'm:f', args: [!!binary aGk=]}}\n",
                   "is not allowed"),
    "local-tag": ("p.yaml", "tasks: {a: {cmd: !shell x}}\n", "is not allowed"),
    "nan-timeout": ("p.yaml", "tasks: {a: {cmd: x, timeout: .nan}}\n", "finite"),
    "nan-backoff": ("p.yaml", "tasks: {a: {cmd: x, retries: 3, retry_backoff: .nan}}\n",
                    "finite"),
    "nan-resource": ("p.yaml", "tasks: {a: {cmd: x, resources: {cpu: .nan}}}\n", "finite"),
    "nan-capacity": ("p.yaml", "resources: {cpu: .nan}\ntasks: {a: {cmd: x}}\n", "finite"),
    "inf-timeout": ("p.yaml", "tasks: {a: {cmd: x, timeout: .inf}}\n", "finite"),
    "nan-estimate": ("p.yaml", "tasks: {a: {cmd: x, estimate: .nan}}\n", "finite"),
    "nan-json": ("p.json", json_doc('{"cmd": "x", "timeout": NaN}'), "NaN"),
    "infinity-json": ("p.json", json_doc('{"cmd": "x", "estimate": -Infinity}'), "Infinity"),
    "unknown-dependencies": (
        "p.yaml",
        "tasks:\n" + "".join(f"  t{i}: {{cmd: x, depends_on: [u{i}]}}\n" for i in range(20_000)),
        "depends on unknown task",
    ),
    "duplicate-keys": ("p.yaml", "tasks:\n  a: {cmd: x, cmd: y}\n", "duplicate key 'cmd'"),
    "duplicate-json-keys": ("p.json", json_doc('{"cmd": "x", "cmd": "y"}'),
                            "duplicate key 'cmd'"),
    "binary-garbage": ("p.yaml", "tasks:\n  a: {cmd: \x00\x01\x02}\n", "invalid YAML"),
    "unclosed": ("p.yaml", "tasks: {a: {cmd: [x, " * 10, "invalid YAML"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_file_is_a_clear_error(tmp_path: Path, case: str) -> None:
    name, text, phrase = CASES[case]
    proc = validate(tmp_path, name, text)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output[-3000:]
    assert proc.returncode == 2, output[-3000:]
    assert phrase in output, output[-3000:]
    # No value is quoted in full: a message never carries an expansion or a huge literal.
    assert max(len(line) for line in output.splitlines()) < 400


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_a_pipeline_of_200_000_tasks_validates(tmp_path: Path, fmt: str) -> None:
    n = 200_000
    if fmt == "yaml":
        text = "tasks:\n" + "".join(
            f"  t{i}: {{cmd: x{', depends_on: [t' + str(i - 1) + ']' if i % 4 else ''}}}\n"
            for i in range(n))
    else:
        text = json.dumps({"tasks": {f"t{i}": {"cmd": "x", **({"depends_on": [f"t{i - 1}"]}
                                                              if i % 4 else {})}
                                     for i in range(n)}})
    proc = validate(tmp_path, f"big.{fmt}", text)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert proc.stdout.startswith(f"ok: {n} tasks")

