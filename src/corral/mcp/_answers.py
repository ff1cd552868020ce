"""What corral's MCP tools answer: pydantic models, so that each tool publishes an output
schema and its answer arrives as structured content (and as the same JSON in text)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from corral.server._models import ProblemOut

__all__ = ["Advice", "Analysis", "Cancelled", "PlanAnswer", "ProblemOut", "RunList",
           "RunStatusAnswer", "Started", "SuggestionOut", "TaskLog"]



class PlanAnswer(BaseModel):
    """A pipeline checked and planned: ``valid`` False lists every problem instead."""

    valid: bool
    problems: list[ProblemOut] = Field(default_factory=list)
    pipeline: str | None = None
    concurrency: int | None = None
    n_tasks: int = 0
    n_edges: int = 0
    levels: list[list[str]] = Field(default_factory=list)
    width: int = 0
    critical_path: list[str] = Field(default_factory=list)
    critical_path_s: float = 0.0
    work_s: float = 0.0
    lower_bound_s: float = 0.0
    history_s: dict[str, float] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)


class Started(BaseModel):
    run_id: str
    status: str = "running"
    resumed_from: str | None = None
    reused: list[str] = Field(default_factory=list)
    rerun: list[str] = Field(default_factory=list)


class RunStatusAnswer(BaseModel):
    run_id: str
    pipeline: str
    status: str
    live: bool
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    counts: dict[str, int]
    tasks: dict[str, str]
    failed: dict[str, str | None]
    critical_path: list[str]
    resumed_from: str | None = None
    resumed_by: str | None = None


class RunList(BaseModel):
    runs: list[dict[str, Any]]


class TaskLog(BaseModel):
    run_id: str
    task: str
    attempt: int
    state: str
    text: str
    lines: int
    truncated: bool
    error: str | None = None


class Cancelled(BaseModel):
    run_id: str
    cancelled: bool
    message: str


class Analysis(BaseModel):
    """A run against its bounds. Times in seconds on the run's clock. ``longest_chain_s``
    and ``zero_slack_chain``: the longest dependency chain with the durations the tasks had
    (``slack_s``: how much later each could have ended without delaying it);
    ``lower_bound_s``: max(that chain, work / concurrency); ``planned_*``: what corral plans
    now for the stored pipeline; ``utilisation``: busy slots per tenth of the run."""

    run_id: str
    pipeline: str
    status: str
    makespan_s: float
    concurrency: int
    work_s: float
    longest_chain_s: float
    lower_bound_s: float
    gap_to_lower_bound_s: float
    efficiency: float | None
    realised_critical_path: list[str]
    planned_critical_path: list[str] | None = None
    planned_critical_path_s: float | None = None
    planned_lower_bound_s: float | None = None
    bounding_tasks: list[dict[str, Any]]
    zero_slack_chain: list[str]
    slack_s: dict[str, float]
    utilisation: list[dict[str, float]]
    mean_utilisation: float | None
    retried: dict[str, int]
    failed: dict[str, str | None]


class SuggestionOut(BaseModel):
    kind: str
    message: str
    tasks: list[str]
    expected_gain_s: float
    detail: dict[str, Any] = Field(default_factory=dict)


class Advice(BaseModel):
    pipeline: str
    concurrency: int
    critical_path_s: float
    lower_bound_s: float
    suggestions: list[SuggestionOut]
    notes: list[str] = Field(default_factory=list)
