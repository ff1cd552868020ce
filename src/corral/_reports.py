"""Reports of a finished run for CI: JUnit XML, a Markdown or JSON execution report, and
GitHub Actions annotations.

A CI job wants three things from a pipeline run besides its exit code: test results its
dashboard understands (JUnit XML, one test case per task), a summary a person reads on the
job's page (the execution report: what bounded the run, what ran in parallel, what was
retried), and failures pinned to the line that defined the task (annotations). All three are
made from the :class:`~corral._result.RunResult` and the graph's task definitions, after the
run, so they cost the run nothing.
"""

from __future__ import annotations

import json
import os
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from corral._result import RunResult, TaskResult
from corral._spec import TaskSpec, TaskState

__all__ = [
    "LOG_TAIL_LINES",
    "REPORT_FORMATS",
    "execution_report",
    "github_annotations",
    "junit_xml",
    "log_tail",
    "markdown_report",
    "write_junit",
    "write_report",
]

REPORT_FORMATS = ("md", "json")
# Lines of a failed task's log shown in JUnit failures and the report.
LOG_TAIL_LINES = 40
_TAIL_BYTES = 16_384
# Characters XML 1.0 forbids, which a command's output may well contain (colour codes aside,
# ESC is allowed only in XML 1.1): dropped from the JUnit file, or no parser would read it.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_NOT_RUN = {TaskState.SKIPPED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED}


def log_tail(task: TaskResult, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of the task's log ('' when it wrote none)."""
    if not task.log_path:
        return ""
    try:
        with open(task.log_path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            data = f.read()
    except OSError:
        return ""
    text = data.decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _source(specs: Mapping[str, TaskSpec], task_id: str) -> tuple[str | None, int | None]:
    """Where the task was defined; a file under the working directory relative to it (CI
    tools resolve paths from the checkout, where corral is run)."""
    spec = specs.get(task_id)
    if spec is None or spec.source is None:
        return None, None
    file, line = spec.source
    if os.path.isabs(file):
        relative = os.path.relpath(file)
        if not relative.startswith(os.pardir):
            file = relative
    return file, line


def _headline(task: TaskResult) -> str:
    """The first line of the task's error: the rest of a command's error is its log tail,
    which the reports show on its own."""
    return (task.error_message() or str(task.state)).partition("\n")[0]


def _seconds(value: float | None) -> str:
    return f"{value or 0.0:.3f}"


# ------------------------------------------------------------------------------- JUnit XML


def junit_xml(result: RunResult, specs: Mapping[str, TaskSpec]) -> bytes:
    """The run as JUnit XML: one ``<testsuite>`` for the pipeline, one ``<testcase>`` per task.

    A failed task is a ``<failure>`` (its error as the message, its log tail as the text); a
    task that never ran (skipped, upstream failed, cancelled) is ``<skipped>`` with the reason.
    Every task's file and line are attributes, as pytest writes them.
    """
    counts = {"tests": len(result), "failures": 0, "errors": 0, "skipped": 0}
    suite = ET.Element("testsuite", name=result.pipeline, timestamp=result.started_at.isoformat(),
                       hostname=socket.gethostname(), time=_seconds(result.duration_s))
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="run_id", value=result.run_id)
    ET.SubElement(properties, "property", name="status", value=str(result.status))
    for task_id, task in result.items():
        case = ET.SubElement(suite, "testcase", name=task_id, classname=result.pipeline,
                             time=_seconds(task.duration_s))
        file, line = _source(specs, task_id)
        if file:
            case.set("file", file)
        if line:
            case.set("line", str(line))
        if task.state is TaskState.FAILED:
            counts["failures"] += 1
            error = task.error
            failure = ET.SubElement(case, "failure", message=_clean(_headline(task)),
                                    type=type(error).__name__ if error else "Failed")
            failure.text = _clean(log_tail(task) or task.error_message() or "")
        elif task.state in _NOT_RUN:
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=_clean(_why_not_run(task)))
        if task.attempts > 1:
            out = ET.SubElement(case, "system-out")
            out.text = f"{task.attempts} attempts"
    root = ET.Element("testsuites", name="corral", time=_seconds(result.duration_s))
    for key, value in counts.items():
        suite.set(key, str(value))
        root.set(key, str(value))
    root.append(suite)
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def _why_not_run(task: TaskResult) -> str:
    reason = str(task.state).replace("_", " ")
    detail = task.error_message()
    return f"{reason}: {detail}" if detail else reason


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


# ------------------------------------------------------------------------ execution report


def execution_report(result: RunResult, specs: Mapping[str, TaskSpec]) -> dict[str, Any]:
    """What a CI summary shows: outcome, critical path, per-task times (offsets from the
    run's start), retries, failures with their log tails, and how much ran in parallel."""
    start = result.started_at
    tasks: list[dict[str, Any]] = []
    intervals: list[tuple[float, float]] = []
    for task_id, task in result.items():
        offset = ((task.started_at - start).total_seconds()
                  if task.started_at is not None else None)
        if offset is not None and task.duration_s is not None:
            intervals.append((offset, offset + task.duration_s))
        file, line = _source(specs, task_id)
        tasks.append({
            "id": task_id,
            "state": str(task.state),
            "attempts": task.attempts,
            "start_s": None if offset is None else round(offset, 6),
            "duration_s": None if task.duration_s is None else round(task.duration_s, 6),
            "executor": task.executor,
            "error": task.error_message(),
            "file": file,
            "line": line,
        })
    busy = sum(end - begin for begin, end in intervals)
    wall = result.duration_s
    return {
        "run_id": result.run_id,
        "pipeline": result.pipeline,
        "status": str(result.status),
        "started_at": start.isoformat(),
        "duration_s": round(wall, 6),
        "counts": result.counts(),
        "critical_path": [
            {"id": t, "duration_s": result[t].duration_s} for t in result.critical_path
        ],
        "parallelism": {
            "peak": _peak(intervals),
            # task-seconds per second of the run: 1.0 is serial
            "average": round(busy / wall, 3) if wall > 0 else 0.0,
            "task_seconds": round(busy, 6),
        },
        "retried": [t["id"] for t in tasks if t["attempts"] > 1],
        "failures": [
            {"id": task_id, "error": _headline(task), "log_tail": log_tail(task)}
            for task_id, task in result.failures().items()
        ],
        "tasks": tasks,
    }


def _peak(intervals: Sequence[tuple[float, float]]) -> int:
    """The most tasks running at one moment (an end at the same instant as a start first)."""
    edges = sorted([(begin, 1) for begin, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def markdown_report(report: Mapping[str, Any]) -> str:
    """The execution report as Markdown, e.g. for ``$GITHUB_STEP_SUMMARY``."""
    mark = {"succeeded": "✅", "failed": "❌", "interrupted": "⏹️"}.get(report["status"], "")
    counts = ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in
                       sorted(report["counts"].items()))
    par = report["parallelism"]
    out = [
        f"## {mark} {report['pipeline']}: {report['status']} in {report['duration_s']:.2f} s",
        "",
        f"Run `{report['run_id']}`: {counts}. Up to {par['peak']} tasks at once, "
        f"{par['average']:.2f} on average ({par['task_seconds']:.2f} task-seconds).",
        "",
    ]
    if report["critical_path"]:
        path = " → ".join(f"{step['id']} ({step['duration_s'] or 0:.2f} s)"
                          for step in report["critical_path"])
        out += [f"**Critical path** (what bounded the run): {path}", ""]
    if report["retried"]:
        out += [f"**Retried:** {', '.join(report['retried'])}", ""]
    out += ["| task | state | attempts | start (s) | duration (s) |",
            "|---|---|---:|---:|---:|"]
    for task in sorted(report["tasks"], key=lambda t: (t["start_s"] is None, t["start_s"] or 0)):
        start = "" if task["start_s"] is None else f"{task['start_s']:.2f}"
        took = "" if task["duration_s"] is None else f"{task['duration_s']:.2f}"
        out.append(f"| {_md(task['id'])} | {task['state']} | {task['attempts']} | {start} | "
                   f"{took} |")
    for failure in report["failures"]:
        out += ["", f"### ❌ {_md(failure['id'])}", "", _md(failure["error"])]
        if failure["log_tail"]:
            out += ["", "```", failure["log_tail"].replace("```", "` ` `"), "```"]
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(fmt: str, path: str, result: RunResult, specs: Mapping[str, TaskSpec]) -> None:
    """Write the execution report as ``fmt`` (``md`` or ``json``) to ``path``."""
    report = execution_report(result, specs)
    text = (markdown_report(report) if fmt == "md"
            else json.dumps(report, indent=2, default=str) + "\n")
    _write(path, text.encode())


def write_junit(path: str, result: RunResult, specs: Mapping[str, TaskSpec]) -> None:
    _write(path, junit_xml(result, specs))


def _write(path: str, data: bytes) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


# -------------------------------------------------------------------- GitHub annotations


def github_annotations(result: RunResult, specs: Mapping[str, TaskSpec]) -> list[str]:
    """``::error`` workflow commands for the failed tasks, pinned to where each was defined
    (GitHub shows them on the job and on the file's line in a pull request)."""
    lines = []
    for task_id, task in result.failures().items():
        file, line = _source(specs, task_id)
        props = [f"title={_prop(f'corral: task {task_id} failed')}"]
        if file:
            props.insert(0, f"file={_prop(file)}")
            if line:
                props.insert(1, f"line={line}")
        message = _headline(task)
        tail = log_tail(task, lines=10)
        if tail:
            message += "\n" + tail
        lines.append(f"::error {','.join(props)}::{_data(message)}")
    return lines


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")
