"""``/mcp`` on a real ``corral serve`` (uvicorn on a free loopback port), driven by the SDK's
streamable HTTP client with the service's tokens: viewers read, operators run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest

pytest.importorskip("mcp")
pytest.importorskip("fastapi")

import httpx2  # noqa: E402
from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402
from tests.helpers import mcp_agent  # noqa: E402
from tests.helpers.live_server import LiveServer  # noqa: E402

from corral.server import AuthSettings, Settings, create_app  # noqa: E402

SECRET = "mcp-secret-" + "x" * 40
REPO = Path(__file__).resolve().parents[2]

PIPELINE = """\
name: http-demo
tasks:
  first: {call: "tests.helpers.jobs:say", kwargs: {text: "hello over http"}}
  second: {call: "tests.helpers.jobs:compute", kwargs: {n: 3}, depends_on: [first]}
  last: {call: "tests.helpers.jobs:say", kwargs: {text: "done"}, depends_on: [first, second]}
"""

SHELL = """\
name: http-shell
tasks:
  first: {cmd: "echo no"}
"""


def token(role: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "agent", "role": role, "iat": now, "exp": now + 600}, SECRET,
                      algorithm="HS256")


@pytest.fixture(scope="module", autouse=True)
def _repo_on_path() -> Iterator[None]:
    """Tasks name ``tests.helpers.jobs:...``; the server runs them in this process."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(REPO))
        yield


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("mcp-server")
    settings = Settings(store_url=f"sqlite:///{folder / 'corral.db'}",
                        auth=AuthSettings(jwt_secret=SECRET), log_dir=folder / "logs",
                        pipelines_dir=folder / "pipelines")
    with LiveServer(create_app(settings)) as live:
        yield live


def as_agent(server: LiveServer, role: str, scenario: Any) -> None:
    async def main() -> None:
        headers = {"Authorization": f"Bearer {token(role)}"}
        async with (create_mcp_http_client(headers=headers,
                                           timeout=httpx2.Timeout(mcp_agent.HANG_GUARD_S))
                    as http,
                    streamable_http_client(f"{server.url}/mcp", http_client=http)
                    as (read, write),
                    ClientSession(read, write) as session):
            with anyio.fail_after(mcp_agent.HANG_GUARD_S):
                await session.initialize()
            await scenario(session)

    anyio.run(main)


def test_an_operator_plans_runs_reads_and_analyses_over_http(server: LiveServer) -> None:
    async def scenario(session: ClientSession) -> None:
        await mcp_agent.tools_and_cycle(session)
        await mcp_agent.bad_input(session)
        run_id = await mcp_agent.run_read_analyse(session, PIPELINE, task="first",
                                                  says="hello over http")
        await mcp_agent.suggestions_for_bad_dag(session)
        details = await session.read_resource(f"corral://runs/{run_id}")
        assert run_id in details.contents[0].text  # type: ignore[union-attr]
        text = await session.read_resource("corral://pipelines/http-demo")
        assert "hello over http" in text.contents[0].text  # type: ignore[union-attr]
        refused = await mcp_agent.refusal(session, "execute_dag_async", pipeline=SHELL)
        assert refused["error"] == "shell_not_allowed"  # --mcp-allow-shell is off by default
        file = await mcp_agent.refusal(session, "execute_dag_async", file="/etc/passwd")
        assert file["field"] == "file"  # no reading the server's files over HTTP

    as_agent(server, "operator", scenario)


def test_a_viewer_reads_but_may_not_run(server: LiveServer) -> None:
    async def scenario(session: ClientSession) -> None:
        plan = await mcp_agent.call(session, "create_dag_execution_plan",
                                    pipeline=PIPELINE)
        assert plan["valid"] is True
        assert plan["levels"] == [["first"], ["second"], ["last"]]
        assert plan["critical_path"][::len(plan["critical_path"]) - 1] == ["first", "last"]
        for tool, args in [("execute_dag_async", {"pipeline": PIPELINE}),
                           ("cancel_run", {"run_id": "any"}),
                           ("resume_run", {"run_id": "any"})]:
            refused = await mcp_agent.refusal(session, tool, **args)
            assert refused["error"] == "forbidden", tool
            assert "operator" in refused["message"]
        assert (await mcp_agent.call(session, "list_runs"))["runs"] is not None

    as_agent(server, "viewer", scenario)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}])
def test_no_valid_token_no_mcp(server: LiveServer, headers: dict[str, str]) -> None:
    response = httpx.post(f"{server.url}/mcp", headers={
        **headers, "Accept": "application/json, text/event-stream"}, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=mcp_agent.HANG_GUARD_S)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


SLOW = """\
name: http-slow
tasks:
  quick: {cmd: "echo quick"}
  slow: {cmd: "sleep 60", depends_on: [quick]}
"""


def test_an_operator_cancels_and_resumes_with_shell_allowed(
        tmp_path: Path) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'corral.db'}",
                        auth=AuthSettings(jwt_secret=SECRET), log_dir=tmp_path / "logs",
                        pipelines_dir=tmp_path / "pipelines", mcp_allow_shell=True)

    async def scenario(session: ClientSession) -> None:
        run_id = (await mcp_agent.call(session, "execute_dag_async", pipeline=SLOW))["run_id"]
        with anyio.fail_after(mcp_agent.HANG_GUARD_S):
            while (await mcp_agent.call(session, "get_run_status", run_id=run_id)
                   )["tasks"]["slow"] != "running":
                await anyio.sleep(0.05)
        cancelled = await mcp_agent.call(session, "cancel_run", run_id=run_id)
        assert cancelled["cancelled"] is True
        ended = await mcp_agent.wait_for_end(session, run_id)
        assert ended["status"] == "interrupted"
        assert ended["tasks"]["quick"] == "succeeded"
        resumed = await mcp_agent.call(session, "resume_run", run_id=run_id)
        assert resumed["resumed_from"] == run_id
        assert resumed["reused"] == ["quick"]
        assert resumed["rerun"] == ["slow"]
        again = await mcp_agent.refusal(session, "resume_run", run_id=run_id)
        assert again["error"] == "already_resumed"
        stopped = await mcp_agent.call(session, "cancel_run", run_id=resumed["run_id"])
        assert stopped["cancelled"] is True
        assert (await mcp_agent.wait_for_end(session, resumed["run_id"]))["status"] == \
            "interrupted"
        not_live = await mcp_agent.call(session, "cancel_run", run_id=run_id)
        assert not_live["cancelled"] is False

    with LiveServer(create_app(settings)) as live:
        as_agent(live, "operator", scenario)


def test_without_auth_only_local_hosts_reach_mcp(tmp_path: Path) -> None:
    """Auth off (the server then listens on 127.0.0.1 only): a web page that rebinds its own
    name to 127.0.0.1 is refused by its Host header."""
    settings = Settings(store_url=f"sqlite:///{tmp_path / 'corral.db'}",
                        log_dir=tmp_path / "logs", pipelines_dir=tmp_path / "pipelines")
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    with LiveServer(create_app(settings)) as live:
        port = live.port
        foreign = httpx.post(f"{live.url}/mcp", json=initialize, timeout=mcp_agent.HANG_GUARD_S,
                             headers={**accept, "Host": f"rebound.example:{port}"})
        assert foreign.status_code == 421

        async def scenario(session: ClientSession) -> None:
            tools = await session.list_tools()
            assert {t.name for t in tools.tools} == mcp_agent.TOOLS

        as_agent(live, "viewer", scenario)  # the token is not even looked at
