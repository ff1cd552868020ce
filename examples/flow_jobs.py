"""Tasks of examples/flow_control.yml: calls to a rate-limited "API" and a flaky tool, offline."""

from __future__ import annotations

import time

import corral


def fetch(page: int) -> str:
    """One call; the task's rate_limit option paces the tasks themselves."""
    return f"page {page} at {time.strftime('%H:%M:%S')}"


def fetch_many(pages: int) -> list[int]:
    """Several calls inside one task, each taking the run's 'api' limit."""
    done = []
    for page in range(pages):
        with corral.limit("api"):
            done.append(page)
    return done


def flaky_tool(status: str) -> str:
    """A tool that is down, then up again."""
    if status == "down":
        raise ConnectionError("the tool is down")
    return "tool ok"
