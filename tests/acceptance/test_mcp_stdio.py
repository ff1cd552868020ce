"""``corral mcp`` for real: the SDK's client starts the process and talks to it over stdio."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import anyio
import pytest

pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402
from tests.helpers import mcp_agent  # noqa: E402

PIPELINE = """\
name: stdio-demo
tasks:
  first: {cmd: "echo hello from the first task"}
  second: {cmd: "echo two", depends_on: [first]}
  last: {cmd: "echo done", depends_on: [first, second]}
"""


def corral_mcp(folder: Path, *extra: str) -> StdioServerParameters:
    exe = shutil.which("corral", path=str(Path(sys.executable).parent))
    assert exe is not None
    return StdioServerParameters(command=exe, args=[
        "mcp", "--store", f"sqlite:///{folder / 'corral.db'}", "--log-dir",
        str(folder / "logs"), *extra], cwd=str(folder))


def test_an_agent_plans_runs_reads_and_analyses_over_stdio(tmp_path: Path) -> None:
    async def agent() -> None:
        async with (stdio_client(corral_mcp(tmp_path)) as (read, write),
                    ClientSession(read, write) as session):
            with anyio.fail_after(mcp_agent.HANG_GUARD_S):
                await session.initialize()
            await mcp_agent.tools_and_cycle(session)
            await mcp_agent.bad_input(session)
            await mcp_agent.run_read_analyse(session, PIPELINE, task="first",
                                             says="hello from the first task")
            await mcp_agent.suggestions_for_bad_dag(session)
            resources = await session.list_resources()
            assert "corral://runs" in [str(r.uri) for r in resources.resources]

    anyio.run(agent)


def test_no_allow_shell_refuses_shell_pipelines(tmp_path: Path) -> None:
    async def agent() -> None:
        async with (stdio_client(corral_mcp(tmp_path, "--no-allow-shell")) as (read, write),
                    ClientSession(read, write) as session):
            with anyio.fail_after(mcp_agent.HANG_GUARD_S):
                await session.initialize()
            refused = await mcp_agent.refusal(session, "execute_dag_async", pipeline=PIPELINE)
            assert refused["error"] == "shell_not_allowed"
            assert "first" in refused["message"]

    anyio.run(agent)


def test_a_missing_mcp_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from corral.cli import main

    monkeypatch.setitem(sys.modules, "mcp.server.mcpserver", None)  # as if not installed
    result = CliRunner().invoke(main, ["mcp"])
    assert result.exit_code == 2, result.output
    assert "corral mcp needs the mcp extra: pip install 'corral[mcp]'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_over_stdio_a_file_runs_with_the_modules_next_to_it(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    # What a module prints as it is imported must not reach the protocol's stdout.
    (project / "next_to_it.py").write_text(
        "print('imported, on stdout')\n"
        "def hello():\n    print('from a module next to the file')\n")
    (project / "flow.yaml").write_text(
        "name: from-file\ntasks:\n  hello: {call: 'next_to_it:hello'}\n"
        "  last: {cmd: 'true', depends_on: [hello]}\n")

    async def agent() -> None:
        async with (stdio_client(corral_mcp(tmp_path)) as (read, write),
                    ClientSession(read, write) as session):
            with anyio.fail_after(mcp_agent.HANG_GUARD_S):
                await session.initialize()
            started = await mcp_agent.call(session, "execute_dag_async",
                                           file=str(project / "flow.yaml"))
            status = await mcp_agent.wait_for_end(session, started["run_id"])
            assert status["status"] == "succeeded", status
            log = await mcp_agent.call(session, "get_task_log", run_id=started["run_id"],
                                       task="hello")
            assert "from a module next to the file" in log["text"]

    anyio.run(agent)
