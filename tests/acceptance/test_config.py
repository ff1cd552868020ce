"""Layered configuration through the real CLI: corral.toml / [tool.corral] < [env.NAME]
(CORRAL_ENV) < CORRAL_* variables < options; `corral config show`; bad files exit 2 naming
file, key and line before anything starts; startup validation against the machine and the
real PostgreSQL server's max_connections."""

from __future__ import annotations

import json
import re

import pytest
from tests.helpers.postgres import POSTGRES_URL, schema_url
from tests.helpers.waiting import out

PIPELINE = "name: p\ntasks:\n  a: {cmd: 'true'}\n"

CONFIG = """\
# corral.toml
concurrency = 3
log-dir = "logs-from-file"

[env.production]
concurrency = 5
"""


def width(proc) -> int:
    """The concurrency a dry run says it would use."""
    assert proc.returncode == 0, out(proc)
    match = re.search(r"\(concurrency (\d+)\)", proc.stdout)
    assert match, out(proc)
    return int(match.group(1))


def test_precedence_at_every_layer(corral, write):
    write("p.yaml", PIPELINE)
    dry = ("run", "p.yaml", "--dry-run", "--no-store")
    write("p3.yaml", "name: p\nconcurrency: 2\ntasks:\n  a: {cmd: 'true'}\n")
    # Defaults: the pipeline file's concurrency (no configuration file yet).
    assert width(corral("run", "p3.yaml", "--dry-run", "--no-store")) == 2
    write("corral.toml", CONFIG)
    # The configuration file acts as options do: over the pipeline file's concurrency.
    assert width(corral("run", "p3.yaml", "--dry-run", "--no-store")) == 3
    assert width(corral(*dry)) == 3
    assert width(corral(*dry, env={"CORRAL_ENV": "production"})) == 5
    assert width(corral(*dry, env={"CORRAL_ENV": "production", "CORRAL_CONCURRENCY": "6"})) == 6
    assert width(corral(*dry, "-c", "7",
                        env={"CORRAL_ENV": "production", "CORRAL_CONCURRENCY": "6"})) == 7


def test_a_file_setting_reaches_the_run(corral, write, tmp_path):
    write("p.yaml", PIPELINE)
    write("corral.toml", CONFIG)
    proc = corral("run", "p.yaml", "--no-store")
    assert proc.returncode == 0, out(proc)
    assert (tmp_path / "logs-from-file").is_dir()
    assert not (tmp_path / ".corral" / "logs").exists()


def test_pyproject_tool_corral_found_from_a_subdirectory(corral, write, tmp_path):
    write("pyproject.toml", """\
        [project]
        name = "x"

        [tool.corral]
        concurrency = 4

        [tool.corral.env.ci]
        concurrency = 9
        """)
    write("sub/dir/p.yaml", PIPELINE)
    cwd = tmp_path / "sub" / "dir"
    assert width(corral("run", "p.yaml", "--dry-run", "--no-store", cwd=cwd)) == 4
    assert width(corral("run", "p.yaml", "--dry-run", "--no-store", cwd=cwd,
                        env={"CORRAL_ENV": "ci"})) == 9
    # A corral.toml nearer the working directory wins.
    write("sub/corral.toml", "concurrency = 8\n")
    assert width(corral("run", "p.yaml", "--dry-run", "--no-store", cwd=cwd)) == 8
    # CORRAL_CONFIG names a file outright.
    write("elsewhere.toml", "concurrency = 11\n")
    assert width(corral("run", "p.yaml", "--dry-run", "--no-store", cwd=cwd,
                        env={"CORRAL_CONFIG": str(tmp_path / "elsewhere.toml")})) == 11


def test_config_show_text_and_json_say_where_each_value_came_from(corral, write, tmp_path):
    write("corral.toml", CONFIG + 'store = "postgresql://me:hunter2@db.example/corral"\n'
          'jwt_secret = "s3cret-s3cret-s3cret-s3cret-s3cret"\n')
    env = {"CORRAL_ENV": "production", "CORRAL_PORT": "9000"}
    proc = corral("config", "show", env=env)
    assert proc.returncode == 0, out(proc)
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line[:1] != "#"}
    path = str(tmp_path / "corral.toml")
    assert re.search(rf"^concurrency\s+5\s+# {re.escape(path)}:6 \[env.production\]$",
                     lines["concurrency"])
    assert lines["log_dir"].endswith(f"# {path}:3")
    assert re.search(r"^port\s+9000\s+# env CORRAL_PORT$", lines["port"])
    assert re.search(r"^lease\s+30s\s+# default$", lines["lease"])
    assert "hunter2" not in proc.stdout
    assert "s3cret" not in proc.stdout
    assert "environment: production" in proc.stdout

    doc = json.loads(corral("config", "show", "--json", env=env).stdout)
    assert doc["file"] == path
    assert doc["environment"] == "production"
    settings = {row["key"]: row for row in doc["settings"]}
    assert settings["concurrency"]["value"] == 5
    assert settings["concurrency"]["origin"] == {
        "kind": "file", "path": path, "line": 6, "section": "env.production"}
    assert settings["port"]["value"] == 9000
    assert settings["port"]["origin"] == {"kind": "env", "envvar": "CORRAL_PORT"}
    assert settings["fail_fast"] == {"key": "fail_fast", "value": True, "source": "default",
                                     "variable": "CORRAL_FAIL_FAST",
                                     "origin": {"kind": "default"}}
    # Different commands, different defaults: said per command.
    assert settings["log_level"]["value"] == {"mcp": "warning", "serve": "info"}


BAD_FILES = {
    "syntax": ("concurrency = 3\nlog_dir = \n", r"corral\.toml: not valid TOML: .*line 2"),
    "unknown key": ("concurrency = 3\nconcurency = 4\n[env.production]\n",
                    r"corral\.toml:2: concurency: unknown setting "
                    r"\(did you mean 'concurrency'\?\)"),
    "bad type": ('concurrency = "many"\n', r"corral\.toml:1: concurrency: .*integer"),
    "out of range": ("concurrency = 0\n", r"corral\.toml:1: concurrency: .*greater than or equal"),
    "bad in a section": ("concurrency = 3\n\n[env.production]\nlease = \"soon\"\n",
                         r"corral\.toml:4 \[env\.production\]: lease: 'soon' is not a duration"),
    "unknown in a section": ("[env.production]\nfail-fst = false\n",
                             r"corral\.toml:2: env\.production\.fail_fst: unknown setting "
                             r"\(did you mean 'fail_fast'\?\)"),
    "missing section": ("[env.staging]\nconcurrency = 2\n[env.prodution]\nconcurrency = 3\n",
                        r"CORRAL_ENV=production: no \[env\.production\] section "
                        r"\(did you mean 'prodution'\? sections: prodution, staging\)"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_exits_2_naming_file_key_and_line_before_anything_starts(
        case, corral, write, tmp_path):
    text, message = BAD_FILES[case]
    write("p.yaml", PIPELINE)
    write("corral.toml", text)
    proc = corral("run", "p.yaml", env={"CORRAL_ENV": "production"})
    assert proc.returncode == 2, out(proc)
    assert re.search(message, proc.stderr), out(proc)
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / ".corral").exists()  # no store, no logs: nothing started


def test_a_choice_the_option_refuses_is_reported_with_its_line(corral, write):
    write("p.yaml", PIPELINE)
    write("corral.toml", 'concurrency = 2\ngraph_format = "png"\n')
    proc = corral("graph", "p.yaml")
    assert proc.returncode == 2, out(proc)
    assert re.search(r"corral\.toml:2: graph_format: 'png' is not one of", proc.stderr), \
        out(proc)


def test_a_bad_variable_is_named_by_config_show(corral):
    proc = corral("config", "show", env={"CORRAL_PORT": "eighty"})
    assert proc.returncode == 2, out(proc)
    assert re.search(r"CORRAL_PORT: .*integer.*'eighty'", proc.stderr), out(proc)


def test_a_missing_config_file_named_by_corral_config(corral):
    proc = corral("config", "show", env={"CORRAL_CONFIG": "nope.toml"})
    assert proc.returncode == 2, out(proc)
    assert "CORRAL_CONFIG=nope.toml: no such file" in proc.stderr


# ---------------------------------------------------------------------- startup validation


def max_connections() -> int:
    import psycopg

    with psycopg.connect(POSTGRES_URL) as conn:
        row = conn.execute("SHOW max_connections").fetchone()
    assert row is not None
    return int(row[0])


def test_refuses_to_start_when_the_store_wants_more_connections_than_postgres_has(
        corral, write):
    write("p.yaml", PIPELINE)
    with schema_url() as url:
        limit = max_connections()
        write("corral.toml", f'store = "{url}"\nstore_connections = {limit + 1}\n')
        proc = corral("run", "p.yaml")
        assert proc.returncode == 2, out(proc)
        assert f"needs {limit + 1} PostgreSQL connections" in proc.stderr, out(proc)
        assert f"max_connections {limit}" in proc.stderr
        assert "store_connections" in proc.stderr
        assert "CORRAL_STORE_CONNECTIONS" in proc.stderr
        assert "run " not in proc.stdout  # nothing started
        # An option below the file's value: the run starts, on that many connections.
        proc = corral("run", "p.yaml", "--store-connections", "2")
        assert proc.returncode == 0, out(proc)


def test_refuses_to_start_when_the_pipeline_asks_for_more_memory_than_the_machine_has(
        corral, write):
    write("p.yaml", "name: p\nresources: {memory_mb: 1000000000}\n"
                    "tasks:\n  a: {cmd: 'true', resources: {memory_mb: 10}}\n")
    proc = corral("run", "p.yaml", "--no-store")
    assert proc.returncode == 2, out(proc)
    assert re.search(r"asks for 1e\+09 MiB of memory \(.*memory_mb in p\.yaml\) but the "
                     r"machine has \d+ MiB", proc.stderr), out(proc)
    assert "run " not in proc.stdout


def test_warns_when_concurrency_is_far_above_the_cpus_for_processes(corral, write):
    write("p.yaml", "name: p\ntasks:\n  a: {call: 'jobs:one', executor: process}\n")
    write("jobs.py", "def one():\n    return 1\n")
    proc = corral("run", "p.yaml", "--no-store", "-c", "4096")
    assert proc.returncode == 0, out(proc)
    assert re.search(r"warning: concurrency: .* is 4096 on \d+ CPUs, and tasks run in "
                     r"processes", proc.stderr), out(proc)


def test_every_command_takes_its_settings_from_the_file(corral, write):
    write("p.yaml", PIPELINE)
    mermaid = "%% corral pipeline: p\nflowchart"
    assert corral("graph", "p.yaml").stdout.startswith(mermaid)  # the default
    write("corral.toml", 'graph_format = "dot"\n')
    proc = corral("graph", "p.yaml")
    assert proc.returncode == 0, out(proc)
    assert proc.stdout.startswith("digraph")
    assert corral("graph", "p.yaml", "--format", "mermaid").stdout.startswith(mermaid)


def test_a_database_that_refuses_connections_at_start_exits_3_password_hidden(corral, write):
    write("p.yaml", PIPELINE)
    write("corral.toml", 'store = "postgresql://me:hunter2@127.0.0.1:1/db"\n')
    proc = corral("run", "p.yaml")
    assert proc.returncode == 3, out(proc)
    assert "postgresql://me:***@127.0.0.1:1/db" in proc.stderr
    assert "hunter2" not in proc.stderr


def test_corral_env_is_ignored_by_a_file_without_sections(corral, write):
    write("p.yaml", PIPELINE)
    write("corral.toml", "concurrency = 3\n")
    env = {"CORRAL_ENV": "production"}
    assert width(corral("run", "p.yaml", "--dry-run", "--no-store", env=env)) == 3
    proc = corral("config", "show", env=env)
    assert "environment: none (CORRAL_ENV=production ignored: no [env.*] sections)" \
        in proc.stdout, out(proc)


def test_config_show_for_a_command_line_names_options_too(corral, write, tmp_path):
    write("p.yaml", PIPELINE)
    write("corral.toml", CONFIG)
    env = {"CORRAL_ENV": "production", "CORRAL_FAIL_FAST": "0"}
    proc = corral("config", "show", "--json", "run", "p.yaml", "--store", "x.db", env=env)
    assert proc.returncode == 0, out(proc)
    settings = {row["key"]: row for row in json.loads(proc.stdout)["settings"]}
    assert settings["store"]["value"] == "x.db"
    assert settings["store"]["origin"] == {"kind": "option", "option": "--store"}
    assert settings["fail_fast"]["value"] is False
    assert settings["fail_fast"]["source"] == "env CORRAL_FAIL_FAST"
    assert settings["concurrency"]["value"] == 5
    assert settings["concurrency"]["source"] == f"{tmp_path / 'corral.toml'}:6 [env.production]"
    assert settings["lease"] == {"key": "lease", "value": 30.0, "source": "default",
                                 "variable": "CORRAL_LEASE", "origin": {"kind": "default"}}
    assert "port" not in settings  # only run's own settings
    # A nested command, in text.
    proc = corral("config", "show", "token", "create", "--role", "operator")
    assert proc.returncode == 0, out(proc)
    assert re.search(r"^token_role\s+operator\s+# option --role$", proc.stdout, re.M), out(proc)
    # Not a command.
    proc = corral("config", "show", "rnu")
    assert proc.returncode == 2
    assert "no command `corral rnu`" in proc.stderr
