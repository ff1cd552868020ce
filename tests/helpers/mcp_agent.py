"""What an agent does with corral's MCP tools, through the SDK's own client session: the
same scenario over stdio (the real ``corral mcp``) and over HTTP (a real ``corral serve``)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError

HANG_GUARD_S = 60.0  # a hang guard, never an assertion

TOOLS = {"create_dag_execution_plan", "execute_dag_async", "get_run_status", "list_runs",
         "get_task_log", "cancel_run", "resume_run", "analyze_dag_performance",
         "optimize_dag_structure"}

CYCLE = """\
name: loop
tasks:
  a: {cmd: "true", depends_on: [c]}
  b: {cmd: "true", depends_on: [a]}
  c: {cmd: "true", depends_on: [b]}
"""

# One redundant edge (a -> c, implied by a -> b -> c) and one resource that serialises two
# tasks that do not depend on each other (x and y each hold all of db).
BAD = """\
name: bad
resources: {db: 1}
tasks:
  a: {cmd: "true", estimate: 1}
  b: {cmd: "true", depends_on: [a], estimate: 1}
  c: {cmd: "true", depends_on: [a, b], estimate: 1}
  x: {cmd: "true", resources: {db: 1}, estimate: 5}
  y: {cmd: "true", resources: {db: 1}, estimate: 5}
"""


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """The structured answer of a successful call."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


async def refusal(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """The JSON body of a refused call."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    text = result.content[0].text  # type: ignore[union-attr]
    body: dict[str, Any] = json.loads(text)
    return body


async def wait_for_end(session: ClientSession, run_id: str) -> dict[str, Any]:
    with anyio.fail_after(HANG_GUARD_S):
        while True:
            status = await call(session, "get_run_status", run_id=run_id)
            if status["status"] != "running":
                return status
            await anyio.sleep(0.05)


async def tools_and_cycle(session: ClientSession) -> None:
    listed = await session.list_tools()
    assert {t.name for t in listed.tools} == TOOLS
    for tool in listed.tools:  # typed inputs, structured answers, what they change
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None, tool.name
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is (tool.name not in {
            "execute_dag_async", "cancel_run", "resume_run"}), tool.name
    prompts = await session.list_prompts()
    assert {p.name for p in prompts.prompts} == {"why_was_this_run_slow", "plan_and_run"}
    slow = await session.get_prompt("why_was_this_run_slow", {"run_id": "r-42"})
    assert "analyze_dag_performance" in slow.messages[0].content.text  # type: ignore[union-attr]
    plan = await call(session, "create_dag_execution_plan", pipeline=CYCLE)
    assert plan["valid"] is False
    cycles = [p for p in plan["problems"] if p["message"].startswith("cycle:")]
    assert cycles, plan["problems"]
    assert cycles[0]["message"] in {"cycle: a -> b -> c -> a", "cycle: b -> c -> a -> b",
                                    "cycle: c -> a -> b -> c"}
    assert cycles[0]["line"] is not None


async def bad_input(session: ClientSession) -> None:
    """Wrong arguments and unknown runs: structured errors naming the field; the server
    answers the next call as if nothing happened."""
    unknown = await refusal(session, "get_run_status", run_id="no-such-run")
    assert unknown["error"] == "unknown_run"
    assert unknown["field"] == "run_id"
    broken = await refusal(session, "execute_dag_async", pipeline="tasks:\n  a: {cmd: [\n")
    assert broken["error"] == "invalid_pipeline"
    assert broken["problems"][0]["line"] is not None
    assert broken["problems"][0]["file"] == "pipeline.yaml"
    only = await refusal(session, "execute_dag_async", pipeline=CYCLE.replace(
        "depends_on: [c]", ""), only=["nope"])
    assert only["field"] == "only"
    assert "nope" in only["problems"][0]["message"]
    wrong_type = await session.call_tool("get_task_log", {"run_id": "x", "task": "t",
                                                          "attempt": "first"})
    assert wrong_type.is_error
    assert "attempt" in wrong_type.content[0].text  # type: ignore[union-attr]
    missing = await session.call_tool("create_dag_execution_plan", {})
    assert missing.is_error
    assert "pipeline" in missing.content[0].text  # type: ignore[union-attr]
    assert (await call(session, "list_runs", limit=1))["runs"] is not None


async def run_read_analyse(session: ClientSession, pipeline: str, *, task: str,
                           says: str) -> str:
    """Start ``pipeline``, poll it to success, read ``task``'s log (which prints ``says``)
    and analyse the run; the run id."""
    started = await call(session, "execute_dag_async", pipeline=pipeline)
    run_id = str(started["run_id"])
    status = await wait_for_end(session, run_id)
    assert status["status"] == "succeeded", status
    assert set(status["tasks"].values()) == {"succeeded"}
    log = await call(session, "get_task_log", run_id=run_id, task=task)
    assert says in log["text"]
    assert log["attempt"] == 1
    listed = await call(session, "list_runs", limit=5)
    assert run_id in [r["run_id"] for r in listed["runs"]]
    analysis = await call(session, "analyze_dag_performance", run_id=run_id)
    assert analysis["status"] == "succeeded"
    assert analysis["realised_critical_path"][-1] == "last"
    assert set(analysis["slack_s"]) == set(status["tasks"])
    assert analysis["lower_bound_s"] <= analysis["makespan_s"]
    assert analysis["planned_critical_path"][-1] == "last"
    # With the run, its durations stand in for the missing estimates.
    known = await call(session, "optimize_dag_structure", pipeline=pipeline, run_id=run_id)
    assert "missing_estimate" not in [s["kind"] for s in known["suggestions"]]
    with pytest.raises(MCPError, match="no-such-run"):
        await session.read_resource("corral://runs/no-such-run")
    return run_id


async def suggestions_for_bad_dag(session: ClientSession) -> None:
    advice = await call(session, "optimize_dag_structure", pipeline=BAD, concurrency=4)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for s in advice["suggestions"]:
        by_kind.setdefault(s["kind"], []).append(s)
    assert [s["tasks"] for s in by_kind["redundant_edge"]] == [["a", "c"]]
    (serial,) = by_kind["serialising_resource"]
    assert serial["detail"]["resource"] == "db"
    assert serial["tasks"] == ["x", "y"]
    assert serial["expected_gain_s"] == 5.0
