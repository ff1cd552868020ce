"""Rate limits and circuit breakers through the real CLI (issue 14 §1-2)."""

from __future__ import annotations

import json
from datetime import datetime

from tests.helpers.waiting import out

from corral.cli import ExitCode

JOBS = """
import corral

def charge():
    raise RuntimeError("payment service down")

def ok():
    return "ok"

def calls(n):
    for _ in range(n):
        with corral.limit("api"):
            pass
    return n
"""

# charge1 and charge2 fail: the breaker opens. refund, after them, fails at once with
# CircuitOpen. cool_down outlasts the reset, so retry_charge is the half-open probe; it
# succeeds and closes the breaker, and receipt runs as usual.
BREAKER = """
circuit_breakers:
  payments: {failures: 2, window: 60s, reset: 1s}
tasks:
  charge1: {call: "jobs:charge", breaker: payments, allow_failure: true}
  charge2: {call: "jobs:charge", breaker: payments, allow_failure: true}
  refund: {call: "jobs:ok", breaker: payments, depends_on: [charge1, charge2],
           allow_failure: true}
  cool_down: {cmd: "sleep 1.2", depends_on: [refund]}
  retry_charge: {call: "jobs:ok", breaker: payments, depends_on: [cool_down]}
  receipt: {call: "jobs:ok", breaker: payments, depends_on: [retry_charge]}
"""


def test_a_failing_dependency_opens_the_breaker_and_a_probe_closes_it(corral, write):
    write("jobs.py", JOBS)
    write("pay.yaml", BREAKER)
    proc = corral("run", "pay.yaml", "--json")
    assert proc.returncode == 0, out(proc)
    doc = json.loads(proc.stdout)
    tasks = doc["tasks"]
    assert tasks["charge1"]["error"].startswith("RuntimeError")
    assert tasks["refund"]["state"] == "failed"
    assert tasks["refund"]["error"].startswith("CircuitOpen: circuit breaker 'payments' is open")
    assert {t: tasks[t]["state"] for t in ("cool_down", "retry_charge", "receipt")} == \
        dict.fromkeys(("cool_down", "retry_charge", "receipt"), "succeeded")
    changes = [(c["breaker"], c["state"]) for c in doc["breakers"]]
    assert changes == [("payments", "open"), ("payments", "half_open"), ("payments", "closed")]
    # recorded with the run: corral show has them too
    shown = corral("show", doc["run_id"], "--json")
    assert shown.returncode == 0, out(shown)
    assert [(c["breaker"], c["state"]) for c in json.loads(shown.stdout)["breakers"]] == changes
    human = corral("show", doc["run_id"])
    assert "circuit breaker payments: open at" in human.stdout


def test_the_summary_shows_the_breaker_and_the_refusal(corral, write):
    write("jobs.py", JOBS)
    write("pay.yaml", BREAKER)
    proc = corral("run", "pay.yaml")
    assert proc.returncode == 0, out(proc)
    assert "breaker open" in proc.stdout
    assert "CircuitOpen" in proc.stdout
    assert "circuit breaker payments: open at" in proc.stdout
    assert "closed at" in proc.stdout


def test_by_default_a_refused_task_fails_the_run(corral, write):
    write("jobs.py", JOBS)
    write("pay.yaml", """
        circuit_breakers:
          payments: {failures: 1, reset: 60s}
        tasks:
          charge: {call: "jobs:charge", breaker: payments, allow_failure: true}
          refund: {call: "jobs:ok", breaker: payments, depends_on: [charge]}
        """)
    proc = corral("run", "pay.yaml", "--json")
    assert proc.returncode == ExitCode.TASK_FAILED, out(proc)
    doc = json.loads(proc.stdout)
    assert doc["tasks"]["refund"]["error"].startswith("CircuitOpen")
    assert doc["tasks"]["refund"]["attempts"] == 1


def test_rate_limited_tasks_start_no_earlier_than_their_schedule(corral, write):
    # The lower bound is the algorithm's, on the run's own clock (what started_at is made
    # of): the gate never admits a task before its GCRA time, the k-th one k intervals after
    # the first. (Two neighbours may start closer than an interval: one woken late counts at
    # its due time, so that lateness does not push the schedule back; docs/flow-control.md.)
    # Not a timing measurement.
    write("jobs.py", JOBS)
    write("api.yaml", """
        rate_limits:
          api: 20/s
        tasks:
          a: {call: "jobs:ok", rate_limit: api}
          b: {call: "jobs:ok", rate_limit: api}
          c: {call: "jobs:ok", rate_limit: api}
          d: {call: "jobs:ok"}
          inside: {call: "jobs:calls", args: [3], rate_limit: api}
        """)
    proc = corral("run", "api.yaml", "--json", "-c", "8")
    assert proc.returncode == 0, out(proc)
    tasks = json.loads(proc.stdout)["tasks"]
    assert {t["state"] for t in tasks.values()} == {"succeeded"}
    starts = sorted(datetime.fromisoformat(tasks[t]["started_at"])
                    for t in ("a", "b", "c", "inside"))
    since = [(s - starts[0]).total_seconds() for s in starts]
    assert all(t >= k * 0.05 - 1e-3 for k, t in enumerate(since)), since


def test_validate_reports_bad_declarations_with_lines(corral, write):
    write("bad.yaml", """
        rate_limits:
          api: 10/x
        circuit_breakers:
          payments: {failures: 5, windw: 60s}
        tasks:
          a: {cmd: "true"}
        """)
    proc = corral("validate", "bad.yaml")
    assert proc.returncode == ExitCode.INVALID, out(proc)
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == ("bad.yaml:2: rate_limits.api must be a rate written N/s, N/m or N/h "
                        "(e.g. 10/s), not '10/x'")
    assert lines[1] == ("bad.yaml:4: unknown key 'circuit_breakers.payments.windw' "
                        "(did you mean 'window'?)")


def test_validate_suggests_declared_names_on_tasks(corral, write):
    write("bad.yaml", """
        rate_limits: {api: 10/s}
        circuit_breakers: {payments: {failures: 5}}
        tasks:
          a: {cmd: "true", rate_limit: apj}
          b: {cmd: "true", breaker: paymnts}
        """)
    proc = corral("validate", "bad.yaml")
    assert proc.returncode == ExitCode.INVALID, out(proc)
    assert proc.stdout.splitlines() == [
        "bad.yaml:4: task 'a': unknown rate limit 'apj' (did you mean 'api'?)",
        "bad.yaml:5: task 'b': unknown circuit breaker 'paymnts' (did you mean 'payments'?)",
    ]


def test_limit_in_a_process_task_says_it_has_no_run_there(corral, write):
    write("jobs.py", JOBS)
    write("proc.yaml", """
        rate_limits: {api: 10/s}
        tasks:
          p: {call: "jobs:calls", args: [2], executor: process}
        """)
    proc = corral("run", "proc.yaml", "--json", "--no-store")
    assert proc.returncode == ExitCode.TASK_FAILED, out(proc)
    error = json.loads(proc.stdout)["tasks"]["p"]["error"]
    assert error.startswith("CorralError: corral.limit('api'): no corral run in this process")
