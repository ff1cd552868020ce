"""Tasks of examples/planner.yml: a planner that chooses its steps from the request."""

from __future__ import annotations

from typing import Any

import corral


def plan(request: str) -> corral.Plan:
    """'compare A B ...': fetch each item, then compare them; anything else: one lookup."""
    words = request.split()
    steps = corral.Plan()
    if words and words[0] == "compare" and len(words) > 2:
        fetched = [steps.add("planner_jobs:fetch", item, id=f"fetch-{item}")
                   for item in words[1:]]
        steps.add("planner_jobs:compare", fetched, id="compare")
    else:
        steps.add("planner_jobs:fetch", request, id="lookup")
    corral.context()["plan"] = steps.ids
    return steps


def fetch(item: str) -> dict[str, Any]:
    corral.context().update_with("fetched", lambda done: [*done, item], [])
    return {"item": item, "legs": {"cats": 4, "dogs": 4, "birds": 2}.get(item, 0)}


def compare(found: list[dict[str, Any]]) -> str:
    most = max(found, key=lambda f: f["legs"])
    return f"{most['item']} have the most legs ({most['legs']})"


def report(results: dict[str, Any]) -> dict[str, Any]:
    print("\n".join(f"{step}: {value}" for step, value in results.items()))
    return results


def topics(request: str) -> list[str]:
    return request.split()[1:]


def shout(topic: str) -> str:
    return topic.upper()
