"""Tasks of examples/agents/pipeline.yml: a planner, researchers behind a flaky search tool,
a writer that calls a rate-limited "model", and the local stub that stands in for both."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from model_stub import Stub

import corral

_stubs: dict[str, Stub] = {}  # url -> running stub, in this (the run's) process
# Straight to 127.0.0.1, whatever http_proxy says: the example never leaves the machine.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def start_stub(fail_first: int = 2) -> str:
    """Start the stub model and search tool; its URL is this task's value."""
    stub = Stub(fail_first)
    stub.thread.start()
    _stubs[stub.url] = stub
    return stub.url


def stop_stub(url: str) -> dict[str, int]:
    """Stop the stub; what it was asked is this task's value and goes into the context."""
    stub = _stubs.pop(url)
    stub.shutdown()
    stub.server_close()
    corral.context()["stub_calls"] = stub.calls
    return stub.calls


RESEARCH = {"breaker": "search", "retries": 3, "retry_delay": 0.1}  # the flaky tool's options
SUMMARISE = {"rate_limit": "model"}  # one model call per task, paced by the run's limit


def plan(question: str, url: str) -> corral.Plan:
    """The planner: 'compare A B ...' researches and summarises each, then writes a comparison;
    anything else researches the question's last word and writes straight from the facts."""
    words = question.lower().split()
    steps = corral.Plan()
    if len(words) > 2 and words[0] == "compare":
        summaries = []
        for topic in words[1:]:
            facts = steps.add("agent_jobs:research", topic, url, id=f"research-{topic}",
                              options=RESEARCH)
            summaries.append(steps.add("agent_jobs:summarise", topic, facts, url,
                                       id=f"summarise-{topic}", options=SUMMARISE))
        steps.add("agent_jobs:write", question, summaries, url, id="write")
    else:
        topic = words[-1] if words else "nothing"
        facts = steps.add("agent_jobs:research", topic, url, id=f"research-{topic}",
                          options=RESEARCH)
        steps.add("agent_jobs:write", question, [facts], url, id="write")
    corral.context()["plan"] = steps.ids
    return steps


def research(topic: str, url: str) -> list[str]:
    """Ask the search tool (the 'search' breaker and retries are the task's options)."""
    try:
        with _http.open(f"{url}/search?q={quote(topic)}", timeout=10) as reply:
            facts: list[str] = json.load(reply)["facts"]
    except urllib.error.HTTPError as exc:
        raise ConnectionError(f"search for {topic!r} failed: HTTP {exc.code}") from None
    corral.context().update_with("notes", lambda notes: {**notes, topic: facts}, {})
    return facts


def summarise(topic: str, facts: list[str], url: str) -> str:
    """One model call; the task's rate_limit option paces these tasks."""
    return _complete("researcher", f"Summarise {topic}: " + "; ".join(facts), url)


def write(question: str, material: list[Any], url: str) -> str:
    """Two model calls inside one task, each taking the run's 'model' limit."""
    notes = corral.context().get("notes", {})
    with corral.limit("model"):
        draft = _complete("writer", f"{question}. Notes on {', '.join(sorted(notes))}: "
                          + " | ".join(map(str, material)), url)
    with corral.limit("model"):
        final = _complete("editor", f"Tighten: {draft}", url)
    corral.context()["answer"] = final
    return final


def report(results: dict[str, Any]) -> str:
    """What the plan's steps returned; the answer last."""
    for step, value in results.items():
        print(f"{step}: {value}")
    answer: str = results["write"]
    return answer


def _complete(role: str, prompt: str, url: str) -> str:
    request = urllib.request.Request(
        f"{url}/v1/complete", data=json.dumps({"role": role, "prompt": prompt}).encode(),
        headers={"Content-Type": "application/json"})
    with _http.open(request, timeout=10) as reply:
        text: str = json.load(reply)["text"]
        return text
