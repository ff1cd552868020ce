"""The configuration model against the CLI's options, where keys are found in a file, and the
startup checks as a table of facts in, verdict out."""

from __future__ import annotations

import click
import pytest

from corral._config import KEYS, _key_lines, setting_key
from corral._preflight import Database, Demand, Machine, check
from corral.errors import StartRefused


def every_option() -> list[tuple[str, click.Option]]:
    from corral.cli import main

    found = []

    def walk(command: click.Command, path: str) -> None:
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, f"{path} {name}".strip())
            return
        # Hidden options are not the user's (a pool's, on its workers' command lines).
        found.extend((path, p) for p in command.params if isinstance(p, click.Option)
                     and p.name != "help" and not p.hidden)

    walk(main, "")
    return found


def test_every_option_variable_is_a_setting_and_every_setting_an_option():
    variables = {str(option.envvar) for _, option in every_option()}
    # How one command prints is not configuration; the rest are all settings.
    assert {v for v in variables if setting_key(v) is None} == {"CORRAL_JSON"}
    assert {f"CORRAL_{key.upper()}" for key in KEYS} == variables - {"CORRAL_JSON"}


def test_key_lines_follow_tables_and_quoted_and_dashed_keys():
    text = ('# top\nconcurrency = 3\n"log-dir" = "x"\n\n[env.production]\n'
            "fail-fast = false  # a comment\n[ tool . corral ]\nport=1\n")
    lines = _key_lines(text)
    assert lines[("concurrency",)] == 2
    assert lines[("log_dir",)] == 3
    assert lines[("env", "production")] == 5
    assert lines[("env", "production", "fail_fast")] == 6
    assert lines[("tool", "corral", "port")] == 8


HOST = Machine(cpus=2, memory_mb=8000.0)
DB = Database(url="postgresql://h/db", max_connections=100, reserved=3, in_use=10)


@pytest.mark.parametrize(("demands", "database", "warnings"), [
    ([Demand("s", connections=4)], DB, []),
    ([Demand("s", connections=97)], DB, ["may wait for connections"]),  # 87 free now
    ([Demand("s", connections=50), Demand("t", connections=40)], DB, ["50 for s, 40 for t"]),
    ([Demand("c", concurrency=8, processes=True)], None, []),
    ([Demand("c", concurrency=9, processes=True)], None, ["c is 9 on 2 CPUs"]),
    ([Demand("c", concurrency=500)], None, []),  # threads and shells: not CPU-bound
    ([Demand("m", memory_mb=8000.0)], None, []),
])
def test_legal_starts_and_their_warnings(demands, database, warnings):
    said = check(HOST, demands, database)
    assert len(said) == len(warnings)
    for text, expected in zip(said, warnings, strict=True):
        assert expected in text


@pytest.mark.parametrize(("demands", "message"), [
    ([Demand("store_connections", connections=98)],
     "needs 98 PostgreSQL connections (98 for store_connections) but postgresql://h/db allows "
     "97 (max_connections 100 less 3 reserved)"),
    ([Demand("resources: memory_mb in p.yaml", memory_mb=8001.0)],
     "asks for 8001 MiB of memory (8001 MiB for resources: memory_mb in p.yaml) but the "
     "machine has 8000 MiB"),
])
def test_refused_starts_name_the_numbers_and_the_setting(demands, message):
    with pytest.raises(StartRefused) as caught:
        check(HOST, demands, DB)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)  # "your input is wrong": exit 2
