"""Request and response bodies of the API, as pydantic models (they make ``/openapi.json``).

Responses are validated against these models on the way out, so the OpenAPI document is
what clients really get.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Attempt",
    "CancelResponse",
    "ErrorBody",
    "Health",
    "LogResponse",
    "OrchestrationHealth",
    "PipelineRequest",
    "PlanRequest",
    "PlanResponse",
    "PruneRequest",
    "PruneResponse",
    "Ready",
    "ResumeResponse",
    "RunDetail",
    "RunList",
    "RunSummary",
    "SubmitRequest",
    "SubmitResponse",
    "TaskDetail",
    "ValidateResponse",
    "WhoAmI",
]

RunStatus = Literal["running", "succeeded", "failed", "interrupted", "crashed"]
TaskStateName = Literal["pending", "ready", "running", "retry_wait", "succeeded", "failed",
                        "skipped", "upstream_failed", "cancelled"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------- errors


class ProblemOut(_Out):
    message: str
    task: str | None = None
    file: str | None = None
    line: int | None = None
    hint: str | None = None


class FieldError(_Out):
    loc: list[str]
    message: str
    type: str


class ErrorDetail(_Out):
    status: int = Field(description="The HTTP status, repeated.")
    code: str = Field(description="Stable, for programs: invalid_pipeline, run_not_found...")
    message: str = Field(description="For people.")
    problems: list[ProblemOut] = Field(description="What is wrong with a pipeline, "
                                       "each with its file and line where known.")
    fields: list[FieldError] = Field(description="What is wrong with the request itself.")
    request_id: str | None = None


class ErrorBody(_Out):
    error: ErrorDetail


# ---------------------------------------------------------------------------- requests

PipelineText = Annotated[str, Field(max_length=8 * 1024 * 1024)]
ParamName = Annotated[str, Field(max_length=200)]


class PipelineRequest(BaseModel):
    """A pipeline, as YAML or JSON text (or a JSON object), with its parameters."""

    # Strict: a JSON API takes JSON types as they are (no "0" for false, no "3" for 3).
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{
        "pipeline": "name: hello\ntasks:\n  a: {cmd: echo hello}\n  b: {cmd: echo world, "
                    "depends_on: [a]}\n",
        "params": {},
    }]})

    pipeline: PipelineText | dict[str, Any] = Field(
        description="The pipeline file's text (YAML or JSON), or the pipeline as an object.")
    format: Literal["yaml", "json"] | None = Field(
        None, description="The text's format; guessed when absent.")
    file: str = Field("pipeline.yaml", min_length=1, max_length=200,
                      description="A name for the text, used in problems.")
    params: dict[ParamName, Annotated[str, Field(max_length=10_000)]] = Field(
        default_factory=dict, description="Pipeline parameters (${name} in the file).")
    only: list[Annotated[str, Field(max_length=500)]] = Field(
        default_factory=list, max_length=10_000,
        description="Keep only these tasks and what they depend on.")


class SubmitRequest(PipelineRequest):
    concurrency: int | None = Field(None, ge=1, le=4096, description="Tasks running at once "
                                    "(default: the file's, else one per CPU).")
    fail_fast: bool = Field(True, description="Cancel the rest of the run on a failure.")


class PlanRequest(PipelineRequest):
    workers: int | None = Field(None, ge=1, le=1_000_000, description="Workers for the "
                                "lower bound (default: the file's concurrency, else one per CPU).")


class PruneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    older_than_s: float = Field(ge=0, le=1e10, description="Delete runs that ended longer "
                                "ago than this many seconds.")


# ---------------------------------------------------------------------------- responses


class Health(_Out):
    status: Literal["ok"]


class Ready(_Out):
    status: Literal["ready", "unavailable"]
    store: str
    accepting: bool
    live_runs: int


class CoordinatorOut(_Out):
    status: Literal["running", "stopping"]
    started_at: str
    uptime_s: float
    live_runs: int
    accepting: bool


class BrokerOut(_Out):
    url: str  # its password hidden
    reachable: bool
    saturation: float | None  # 0..1; None when it could not be read
    error: str | None


class PoolOut(_Out):
    """The fleet's workers serving one queue."""

    queue: str
    workers: int
    healthy: int
    degraded: int
    unhealthy: int
    starting: int
    stopping: int
    capacity: int  # slots of the workers taking work (starting, healthy, degraded)
    running: int
    queued: int  # attempts queued that no worker holds
    done: int  # attempts the workers finished since they started
    recent_done: int  # ... in their recent health windows (corral worker --health-window)
    recent_failed: int  # of ``recent_done``, failed
    error_rate: float | None  # recent_failed / recent_done; None: none finished lately
    throughput_per_s: float
    throughput_over_s: float | None  # the interval; None: the workers' lifetime rate


class StorePoolOut(_Out):
    size: int
    max: int
    active: int
    idle: int
    waiting: int
    saturation: float


class StoreOut(_Out):
    url: str  # its password hidden
    kind: str
    pool: StorePoolOut | None  # None: no connection pool (SQLite)


class OrchestrationHealth(_Out):
    status: Literal["ok", "degraded", "unavailable"]
    reasons: list[str]  # why not ok
    coordinator: CoordinatorOut
    broker: BrokerOut | None  # None: runs execute in this server
    pools: list[PoolOut]
    store: StoreOut


class WhoAmI(_Out):
    subject: str
    role: Literal["none", "viewer", "operator", "admin"]
    via: str
    auth_enabled: bool


class RunSummary(_Out):
    run_id: str
    pipeline: str
    status: RunStatus
    live: bool = Field(description="Executing now, here or in another process.")
    started_at: str
    finished_at: str | None
    duration_s: float | None
    n_tasks: int
    params: dict[str, str]
    host: str
    user: str
    resumed_from: str | None
    resumed_by: str | None


class RunList(_Out):
    runs: list[RunSummary]
    limit: int
    offset: int
    next_offset: int | None = Field(description="Pass as offset for the next page; "
                                    "null on the last page.")


class Attempt(_Out):
    attempt: int
    state: str
    start_s: float = Field(description="Start, in seconds on the run's clock.")
    end_s: float | None
    started_at: str
    finished_at: str | None
    duration_s: float | None
    error: str | None
    exit_code: int | None
    has_log: bool


class TaskDetail(_Out):
    id: str
    deps: list[str]
    executor: str
    state: TaskStateName
    attempts: int
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    error: str | None
    reused: bool
    history: list[Attempt]


class BreakerChangeModel(_Out):
    breaker: str
    state: str = Field(description="closed | open | half_open")
    at: float = Field(description="Seconds from the run's start.")


class RunDetail(RunSummary):
    counts: dict[str, int]
    critical_path: list[str] = Field(description="The realised critical path, once finished.")
    breakers: list[BreakerChangeModel] = Field(
        default_factory=list, description="Circuit breakers that opened, half-opened or closed, "
        "in order (recorded when the run ends).")
    reused: list[str]
    context: dict[str, Any] = Field(
        default_factory=dict, description="The run's shared context (corral.context()) as "
        "its last stored change left it.")
    last_event_id: int = Field(description="Follow the run's events after this id to miss "
                               "nothing since this snapshot.")
    tasks: list[TaskDetail]


class SubmitResponse(_Out):
    run_id: str
    status: Literal["running"]
    url: str
    events_url: str


class CancelResponse(_Out):
    run_id: str
    status: Literal["cancelling"]


class ResumeResponse(_Out):
    run_id: str
    resumed_from: str
    reused: list[str]
    rerun: dict[str, str]
    url: str


class LogResponse(_Out):
    run_id: str
    task: str
    attempt: int
    attempts: list[int]
    has_log: bool
    text: str
    size: int = Field(description="The whole log's size in bytes.")
    offset: int = Field(description="Byte offset of text in the log.")
    next_offset: int = Field(description="Pass as offset to read on from here.")
    truncated: bool
    error: str | None
    traceback: str | None


class PlanResponse(_Out):
    n_tasks: int
    n_edges: int
    levels: list[list[str]]
    width: int
    critical_path: list[str]
    critical_path_s: float
    work_s: float
    workers: int
    lower_bound_s: float


class ValidateResponse(_Out):
    valid: bool
    problems: list[ProblemOut]
    n_tasks: int
    n_edges: int


class PruneResponse(_Out):
    pruned: list[str]
