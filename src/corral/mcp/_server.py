"""The MCP server: corral's tools, resources and prompts on the official SDK's ``MCPServer``.

One server object serves both transports; what differs is who the caller is::

    corral mcp (stdio) ──┐                       ┌─ RunManager (server/_runs.py) ── _launch
                         ├─ build_server(svc, ───┤    submit / cancel / resume, as the HTTP API
    corral serve /mcp ───┘    gate, allow_shell) ├─ the store: runs, details, logs (cli/_history)
       (_http.py: the token,                     └─ _plan (plans) and _advice (suggestions,
        checked again per call)                      analyses)

Over stdio the caller is the user who started the process (:data:`LOCAL`: every tool). Over
HTTP each call carries its bearer token; reading needs a viewer, running, cancelling and
resuming an operator (:class:`TokenGate`). Store reads run in a worker thread: the loop also
drives the runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.types import ToolAnnotations
from pydantic import Field

from corral import __version__
from corral._errors import RunNotFound
from corral.mcp._answers import (
    Advice,
    Analysis,
    Cancelled,
    PlanAnswer,
    ProblemOut,
    RunList,
    RunStatusAnswer,
    Started,
    SuggestionOut,
    TaskLog,
)
from corral.mcp._errors import Refused, tool_errors

if TYPE_CHECKING:
    from corral._graph import Graph
    from corral.server._auth import Authenticator, Role
    from corral.server._service import Service
    from corral.store import RunRecord

__all__ = ["LOCAL", "Gate", "TokenGate", "build_server"]

# Hints for clients (which may ask a person before a tool that is not read-only): reading
# changes nothing; starting a run runs commands (not idempotent: each call is a new run);
# cancelling stops work (destructive, and doing it twice is as doing it once).
READS = ToolAnnotations(read_only_hint=True, open_world_hint=False)
STARTS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                         open_world_hint=True)
STOPS = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                        open_world_hint=False)

# A log read through a tool is cut to its last lines: an agent's context is small.
DEFAULT_TAIL = 200
MAX_TAIL = 5000


class Gate:
    """Who may call what. The base class lets everyone do everything (stdio: the user)."""

    local = True

    def check(self, ctx: Context, need: Role) -> None:
        """Raise :class:`Refused` unless the caller of ``ctx`` holds ``need``."""


LOCAL = Gate()


class TokenGate(Gate):
    """Over HTTP: the call's bearer token, checked by the service's authenticator."""

    local = False

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    def check(self, ctx: Context, need: Role) -> None:
        from corral.server._errors import ApiError

        headers = ctx.headers or {}
        try:
            principal = self.auth.authenticate(headers.get("authorization"))
        except ApiError as exc:
            raise Refused("unauthorized", exc.message) from None
        if principal.role < need:
            raise Refused("forbidden", f"this needs the {need} role; the token has "
                          f"{principal.role if principal.role else 'no role'}")


# ------------------------------------------------------------------------- helpers


def _parse(text: str, params: Mapping[str, str] | None, fmt: str | None) -> Any:
    """A pipeline from an agent's text: nothing is imported (its call: targets are found
    without running their modules' code)."""
    from corral._pipeline import parse_pipeline

    return parse_pipeline(text, file=_name(fmt), fmt=fmt, params=params, check_calls="find")


def _name(fmt: str | None) -> str:
    """What problems in a pipeline sent as text call it (as the HTTP API does)."""
    return "pipeline.json" if fmt == "json" else "pipeline.yaml"


def _concurrency(given: int | None, pipeline: Any) -> int:
    from corral._runner import default_concurrency

    # As for corral plan and corral run: the argument, else the file's, else one per CPU.
    return int(given or pipeline.concurrency or default_concurrency())


def _took(svc: Service, graph: Graph, run_id: str | None) -> dict[str, float]:
    """What each task of ``graph`` took, estimate or not (to hold estimates against): in run
    ``run_id`` (its last attempt), else the median of its earlier successful attempts."""
    if run_id is None:
        return svc.store.task_durations(graph.name, list(graph.ids))
    from corral.cli._history import run_details

    details = run_details(svc.store.load_run(run_id))
    return {t: float(d["duration_s"]) for t, d in details["tasks"].items()
            if d["duration_s"] is not None and t in graph.index}


def build_server(svc: Service, *, gate: Gate = LOCAL, allow_shell: bool = True) -> MCPServer:
    """corral's MCP server over ``svc`` (its store and run manager)."""
    from corral.server._auth import Role

    mcp: MCPServer = MCPServer(
        name="corral", version=__version__,
        instructions="Plan, run, watch and improve DAG pipelines with corral. A pipeline is "
        "YAML or JSON text (see `corral schema`). Plan it with create_dag_execution_plan, "
        "start it with execute_dag_async, poll get_run_status until it ends, read logs with "
        "get_task_log, then analyze_dag_performance and optimize_dag_structure.")
    store = svc.store
    runs = svc.runs

    @mcp.tool(annotations=READS)
    @tool_errors
    async def create_dag_execution_plan(
        pipeline: str, ctx: Context, params: dict[str, str] | None = None,
        format: Literal["yaml", "json"] | None = None, concurrency: int | None = Field(
            default=None, ge=1),
    ) -> PlanAnswer:
        """Validate and plan a pipeline given as YAML or JSON text. Invalid: every problem
        with its line (a cycle as its path, unknown names with "did you mean"). Valid: levels,
        width, critical path, total work, the makespan lower bound and warnings."""
        gate.check(ctx, Role.VIEWER)
        from corral._errors import ParameterError, ValidationError
        from corral._launch import read_history
        from corral._plan import make_plan
        from corral.server._runs import shell_tasks

        def plan() -> PlanAnswer:
            try:
                parsed = _parse(pipeline, params, format)
                graph = parsed.dag.validate()
            except ValidationError as exc:
                return PlanAnswer(valid=False, problems=[
                    ProblemOut.model_validate(p.as_dict()) for p in exc.problems])
            except ParameterError as exc:
                return PlanAnswer(valid=False, problems=[ProblemOut(message=str(exc))])
            n = _concurrency(concurrency, parsed)
            history = read_history(svc.store, graph)  # as corral plan: estimates win
            result = make_plan(graph, workers=n, history=history)
            warnings = []
            guessed = [s.id for s in graph.specs if s.estimate is None and s.id not in history]
            if guessed:
                warnings.append(f"{len(guessed)} task(s) have no estimate and no history: "
                                f"planned at 1 s each ({', '.join(guessed[:10])})")
            if n > result.width:
                warnings.append(f"concurrency {n} is above the graph's width {result.width}")
            shell = shell_tasks(graph)
            if shell and not allow_shell:
                warnings.append(f"tasks {', '.join(shell)} run shell commands, which this "
                                "server does not allow: execute_dag_async will refuse them")
            body = result.as_dict()
            body.pop("workers")
            return PlanAnswer(valid=True, pipeline=parsed.name, concurrency=n,
                              history_s=history, warnings=warnings, **body)

        return await anyio.to_thread.run_sync(plan)

    @mcp.tool(annotations=STARTS)
    @tool_errors
    async def execute_dag_async(
        ctx: Context, pipeline: str | None = None, file: str | None = None,
        params: dict[str, str] | None = None, format: Literal["yaml", "json"] | None = None,
        concurrency: int | None = Field(default=None, ge=1), only: list[str] | None = None,
    ) -> Started:
        """Start a run of a pipeline (its text, or over stdio a file path) in the background
        and return its run id at once; poll get_run_status for its progress. ``only``: these
        tasks and what they depend on."""
        gate.check(ctx, Role.OPERATOR)
        from corral.server._runs import Submission

        if (pipeline is None) == (file is None):
            raise Refused("invalid_argument", "give exactly one of pipeline (the text) and "
                          "file (a path)", field="pipeline")
        base_dir = None
        name = _name(format)
        if file is not None:
            if not gate.local:
                raise Refused("invalid_argument", "file is only accepted over stdio; send the "
                              "pipeline's text", field="file")
            path = Path(file)
            try:
                pipeline = await anyio.to_thread.run_sync(path.read_text, "utf-8")
            except OSError as exc:
                raise Refused("invalid_argument", f"cannot read {file}: {exc.strerror}",
                              field="file") from None
            base_dir, name = str(path.absolute().parent), str(path)
            if format is None and path.suffix.lower() == ".json":
                format = "json"
        assert pipeline is not None
        run_id = await runs.submit(Submission(
            text=pipeline, fmt=format, file=name, params=params or {}, only=tuple(only or ()),
            concurrency=concurrency, base_dir=base_dir, allow_shell=allow_shell))
        return Started(run_id=run_id)

    @mcp.tool(annotations=READS)
    @tool_errors
    async def get_run_status(run_id: str, ctx: Context) -> RunStatusAnswer:
        """A run's state: running or how it ended, the count of tasks in each state, each
        task's state, the failed tasks' errors and the critical path so far."""
        gate.check(ctx, Role.VIEWER)
        from corral.cli._history import run_details

        details = await anyio.to_thread.run_sync(lambda: run_details(store.load_run(run_id)))
        return _status(details, live=runs.is_live(run_id))

    @mcp.tool(annotations=READS)
    @tool_errors
    async def list_runs(
        ctx: Context, pipeline: str | None = None,
        status: Literal["running", "succeeded", "failed", "interrupted", "crashed"] | None = None,
        limit: int = Field(default=20, ge=1, le=500),
    ) -> RunList:
        """Recorded runs, newest first."""
        gate.check(ctx, Role.VIEWER)
        from corral.server._views import run_summary

        found = await anyio.to_thread.run_sync(
            lambda: store.list_runs(status=status, pipeline=pipeline, limit=limit))
        return RunList(runs=[run_summary(r, live_here=runs.is_live(r.id)) for r in found])

    @mcp.tool(annotations=READS)
    @tool_errors
    async def get_task_log(
        run_id: str, task: str, ctx: Context, attempt: int | None = Field(default=None, ge=1),
        tail: int = Field(default=DEFAULT_TAIL, ge=1, le=MAX_TAIL),
    ) -> TaskLog:
        """The output of one attempt of a task (default: its last), cut to its last ``tail``
        lines."""
        gate.check(ctx, Role.VIEWER)
        return await anyio.to_thread.run_sync(lambda: _read_log(svc, run_id, task, attempt,
                                                                tail))

    @mcp.tool(annotations=STOPS)
    @tool_errors
    async def cancel_run(run_id: str, ctx: Context) -> Cancelled:
        """Stop a run executing in this server, as a first Ctrl-C would: running tasks are
        cancelled, and the run can be resumed later."""
        gate.check(ctx, Role.OPERATOR)
        if runs.cancel(run_id):
            return Cancelled(run_id=run_id, cancelled=True, message="cancel requested")
        run = await anyio.to_thread.run_sync(lambda: store.load_run(run_id).run)
        return Cancelled(run_id=run_id, cancelled=False, message=f"run {run_id} is not running "
                         f"in this server (it is {run.observed_status})")

    @mcp.tool(annotations=STARTS)
    @tool_errors
    async def resume_run(run_id: str, ctx: Context) -> Started:
        """Finish a failed or interrupted run: re-run what did not succeed, reuse the rest.
        Returns the new run's id at once."""
        gate.check(ctx, Role.OPERATOR)
        new_id, plan = await runs.resume(run_id)
        return Started(run_id=new_id, resumed_from=run_id, reused=sorted(plan.reuse),
                       rerun=sorted(plan.rerun))

    @mcp.tool(annotations=READS)
    @tool_errors
    async def analyze_dag_performance(run_id: str, ctx: Context) -> Analysis:
        """How a run went: the realised critical path and the tasks that bounded the
        makespan, slack per task, utilisation over time, retries and failures, and how far
        the run was from the lower bound its graph allowed with the durations it had."""
        gate.check(ctx, Role.VIEWER)
        return Analysis(**await anyio.to_thread.run_sync(_analyse, svc, run_id))

    @mcp.tool(annotations=READS)
    @tool_errors
    async def optimize_dag_structure(
        pipeline: str, ctx: Context, run_id: str | None = None,
        params: dict[str, str] | None = None, format: Literal["yaml", "json"] | None = None,
        concurrency: int | None = Field(default=None, ge=1),
    ) -> Advice:
        """Concrete changes to a pipeline, each with the makespan it could save: redundant
        edges, a chain that bounds the makespan, a resource that serialises tasks,
        concurrency above or below what the graph can use, long critical tasks worth
        splitting, estimates missing or far from history. With ``run_id``, durations are
        that run's."""
        gate.check(ctx, Role.VIEWER)
        from corral._plan import durations_of, make_plan
        from corral.mcp._advice import suggest

        def advise() -> Advice:
            parsed = _parse(pipeline, params, format)
            graph = parsed.dag.validate()
            n = _concurrency(concurrency, parsed)
            history = _took(svc, graph, run_id)
            estimated = {s.id: float(s.estimate) for s in graph.specs
                         if s.estimate is not None}
            durations = durations_of(graph, history)
            found, notes = suggest(graph, durations, concurrency=n, estimated=estimated,
                                   history=history)
            plan = make_plan(graph, workers=n, history=history)
            return Advice(pipeline=parsed.name, concurrency=n,
                          critical_path_s=plan.critical_path_s, lower_bound_s=plan.lower_bound_s,
                          suggestions=[SuggestionOut(**s.as_dict()) for s in found], notes=notes)

        return await anyio.to_thread.run_sync(advise)

    _add_resources(mcp, svc)
    _add_prompts(mcp)
    return mcp


def _status(details: Mapping[str, Any], *, live: bool) -> RunStatusAnswer:
    tasks = {t: d["state"] for t, d in details["tasks"].items()}
    counts: dict[str, int] = {}
    for state in tasks.values():
        counts[state] = counts.get(state, 0) + 1
    return RunStatusAnswer(
        run_id=details["run_id"], pipeline=details["pipeline"], status=details["status"],
        live=live or bool(details["alive"] and details["finished_at"] is None),
        started_at=details["started_at"], finished_at=details["finished_at"],
        duration_s=details["duration_s"], counts=counts, tasks=tasks,
        failed={t: d["error"] for t, d in details["tasks"].items() if d["state"] == "failed"},
        critical_path=details["critical_path"], resumed_from=details["resumed_from"],
        resumed_by=details["resumed_by"])


def _read_log(svc: Service, run_id: str, task: str, attempt: int | None, tail: int) -> TaskLog:
    from corral.cli._history import pick_attempt

    stored = svc.store.load_run(run_id)
    try:
        chosen = pick_attempt(stored, task, attempt)
    except LookupError as exc:
        field = "task" if task not in stored.tasks else "attempt"
        raise Refused("no_log", str(exc), field=field) from None
    n = chosen["attempt"]
    text = ""
    if chosen["log"]:
        try:
            text = Path(chosen["log"]).read_text("utf-8", errors="replace")
        except FileNotFoundError:
            if chosen["executor"] not in ("thread", "async"):  # those make it on first print
                raise Refused("no_log", f"the log of attempt {n} of task {task!r} is gone",
                              field="attempt") from None
    lines = text.splitlines(keepends=True)
    return TaskLog(run_id=run_id, task=task, attempt=n, state=chosen["state"],
                   text="".join(lines[-tail:]), lines=len(lines), truncated=len(lines) > tail,
                   error=chosen["error"])


def _analyse(svc: Service, run_id: str) -> dict[str, Any]:
    from corral._runner import default_concurrency
    from corral.cli._history import run_details
    from corral.mcp._advice import analyse

    stored = svc.store.load_run(run_id)
    details = run_details(stored)
    started = next((e.data for e in svc.store.events(run_id) if e.kind == "run_started"), {})
    width = started.get("concurrency")
    concurrency = width if isinstance(width, int) and width > 0 else default_concurrency()
    deps = {t.id: t.deps for t in stored.run.tasks}
    return {**analyse(details, deps, concurrency), **_planned(svc, stored.run, concurrency)}


def _planned(svc: Service, run: RunRecord, concurrency: int) -> dict[str, Any]:
    """What corral plans now for the pipeline the run stored (estimates, else the store's
    history, else 1 s): its critical path and lower bound, to hold the realised ones against.
    Empty when the run kept no text or it no longer makes a graph."""
    from corral._errors import ParameterError, ValidationError
    from corral._launch import read_history
    from corral._pipeline import parse_pipeline
    from corral._plan import make_plan

    if not run.source_text:
        return {}
    fmt = "json" if (run.source_path or "").endswith(".json") else None
    try:
        parsed = parse_pipeline(run.source_text, file="<stored>", fmt=fmt,
                                params=dict(run.params), check_calls="off")
        graph = parsed.dag.validate()
    except (ValidationError, ParameterError):
        return {}
    plan = make_plan(graph, workers=concurrency, history=read_history(svc.store, graph))
    return {"planned_critical_path": plan.critical_path,
            "planned_critical_path_s": plan.critical_path_s,
            "planned_lower_bound_s": plan.lower_bound_s}


def _add_resources(mcp: MCPServer, svc: Service) -> None:
    store = svc.store

    # Resources get no Context argument to check; over HTTP the edge (_http.py) has already
    # required a viewer's token for every request, which is all that reading needs.
    @mcp.resource("corral://runs", name="runs", mime_type="application/json",
                  description="The 50 newest recorded runs.")
    async def runs_resource() -> str:
        from corral.server._views import run_summary

        found = await anyio.to_thread.run_sync(lambda: store.list_runs(limit=50))
        return json.dumps([run_summary(r, live_here=svc.runs.is_live(r.id)) for r in found])

    @mcp.resource("corral://runs/{run_id}", name="run", mime_type="application/json",
                  description="One run: each task's state, attempts and timings, and the "
                  "realised critical path.")
    async def run_resource(run_id: str) -> str:
        from corral.cli._history import run_details

        try:
            details = await anyio.to_thread.run_sync(
                lambda: run_details(store.load_run(run_id)))
        except RunNotFound as exc:
            raise ResourceNotFoundError(str(exc)) from None
        return json.dumps(details, default=str)

    @mcp.resource("corral://pipelines/{name}", name="pipeline", mime_type="text/plain",
                  description="The pipeline text of the newest recorded run of a pipeline.")
    async def pipeline_resource(name: str) -> str:
        def newest() -> str:
            for run in store.list_runs(pipeline=name, limit=20):
                text = store.load_run(run.id).run.source_text
                if text:
                    return text
            raise ResourceNotFoundError(f"no recorded run of pipeline {name!r} kept its text")

        return await anyio.to_thread.run_sync(newest)


def _add_prompts(mcp: MCPServer) -> None:
    @mcp.prompt(name="why_was_this_run_slow",
                description="Find what bounded a run's makespan and what to change.")
    def why_slow(run_id: str) -> str:
        return (f"Find out why corral run {run_id} took as long as it did. Call "
                f"analyze_dag_performance with run_id {run_id!r}: compare makespan_s with "
                "lower_bound_s, name the tasks on the realised critical path and their "
                "durations, point at low utilisation and at retries or failures. Then read the "
                "run's pipeline (resource corral://runs/{id} has its tasks; corral://pipelines/"
                "{name} its text) and call optimize_dag_structure with it and the run_id. "
                "Answer with the three changes that would save the most time, with the "
                "expected gain of each.")

    @mcp.prompt(name="plan_and_run",
                description="Check a pipeline, run it, and report how it went.")
    def plan_and_run(pipeline: str) -> str:
        return ("Here is a corral pipeline:\n\n" + pipeline + "\n\nCall "
                "create_dag_execution_plan with it. If it is invalid, fix every problem (each "
                "names its line) and plan again. When it is valid, start it with "
                "execute_dag_async, poll get_run_status until status is no longer 'running', "
                "read the log of any failed task with get_task_log, and finish with "
                "analyze_dag_performance on the run.")
