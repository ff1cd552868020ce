"""Rate limits: how closely realised start times follow GCRA's schedule.

    python -m bench.rate_limits                        # 200 tasks at 100/s, 3 repetitions
    python -m bench.rate_limits --tasks 50 --rate 50/s --burst 5 --reps 1
    python -m bench.rate_limits --mode calls           # corral.limit() inside one task

Two modes, both in one process on the run's own event loop:

- ``tasks`` (default): ``--tasks`` zero-duration thread tasks share one rate limit
  (``rate_limit: bench``); the scheduler admits them by GCRA. Each task records
  ``time.monotonic()`` as its first act, so the figure includes dispatch to the thread pool:
  what a task calling an API would see.
- ``calls``: one task makes ``--tasks`` calls through ``with corral.limit("bench")``, recording
  the time each call is let through.

GCRA's schedule, from the first admission ``s0``: the first ``burst`` at ``s0``, then one every
``1/rate``: ``ideal[k] = s0 + max(0, k - burst + 1) / rate``. The report gives, per
repetition, the deviation ``realised[k] - ideal[k]`` in milliseconds (median, p99, max; never
negative by construction of the limiter, so larger means later), the spacing between
consecutive admissions (median, min) and the realised rate over the whole run. Not a test:
run it on a quiet machine; a loaded one delays wake-ups and the figures show it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from typing import Any

import corral
from corral._limits import parse_rate_limit


def _ideal(first: float, count: int, rate: float, burst: int) -> list[float]:
    return [first + max(0, k - burst + 1) / rate for k in range(count)]


def _run_tasks(count: int, limit: dict[str, Any], concurrency: int) -> list[float]:
    times: list[float] = []
    lock = threading.Lock()

    def mark() -> None:
        now = time.monotonic()
        with lock:
            times.append(now)

    dag = corral.DAG("bench-rate", rate_limits={"bench": limit})
    for k in range(count):
        dag.add(mark, id=f"t{k}", options={"rate_limit": "bench"})
    result = dag.run(concurrency=concurrency, log_dir=None, handle_signals=False)
    if not result.ok:
        raise SystemExit(f"the benchmark run failed: {result.status}")
    return sorted(times)


def _run_calls(count: int, limit: dict[str, Any]) -> list[float]:
    times: list[float] = []

    def calls() -> None:
        for _ in range(count):
            with corral.limit("bench"):
                times.append(time.monotonic())

    dag = corral.DAG("bench-rate-calls", rate_limits={"bench": limit})
    dag.add(calls, id="calls")
    result = dag.run(log_dir=None, handle_signals=False)
    if not result.ok:
        raise SystemExit(f"the benchmark run failed: {result.status}")
    return times


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(
    mode: str, count: int, rate_text: str, burst: int, concurrency: int
) -> dict[str, float]:
    """One repetition: the deviation from GCRA's schedule and the spacing, in milliseconds."""
    limit = {"rate": rate_text, "burst": burst}
    rate = parse_rate_limit(limit).rate
    times = _run_tasks(count, limit, concurrency) if mode == "tasks" else _run_calls(count, limit)
    ideal = _ideal(times[0], len(times), rate, burst)
    late_ms = [(t - i) * 1000 for t, i in zip(times, ideal, strict=True)]
    gaps_ms = [(b - a) * 1000 for a, b in zip(times[burst - 1:], times[burst:], strict=False)]
    span = times[-1] - times[0]
    return {
        "late_median_ms": statistics.median(late_ms),
        "late_p99_ms": _quantile(late_ms, 0.99),
        "late_max_ms": max(late_ms),
        "gap_median_ms": statistics.median(gaps_ms) if gaps_ms else 0.0,
        "gap_min_ms": min(gaps_ms) if gaps_ms else 0.0,
        "rate_realised": (len(times) - burst) / span if span > 0 else float("nan"),
        "rate_declared": rate,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rate_limits", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("tasks", "calls"), default="tasks")
    p.add_argument("--tasks", type=int, default=200, help="admissions per repetition")
    p.add_argument("--rate", default="100/s", help="the limit, N/s, N/m or N/h")
    p.add_argument("--burst", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=8, help="the run's concurrency (tasks)")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    if args.tasks < 2 or args.burst < 1 or args.burst >= args.tasks:
        p.error("need --tasks >= 2 and 1 <= --burst < --tasks")
    print(f"mode {args.mode}: {args.tasks} admissions at {args.rate}, burst {args.burst}, "
          f"{args.reps} repetition(s)")
    print(f"{'rep':>3}  {'late med':>9}  {'late p99':>9}  {'late max':>9}  {'gap med':>8}  "
          f"{'gap min':>8}  {'rate':>14}")
    for rep in range(1, args.reps + 1):
        m = measure(args.mode, args.tasks, args.rate, args.burst, args.concurrency)
        print(f"{rep:>3}  {m['late_median_ms']:>7.2f}ms  {m['late_p99_ms']:>7.2f}ms  "
              f"{m['late_max_ms']:>7.2f}ms  {m['gap_median_ms']:>6.2f}ms  "
              f"{m['gap_min_ms']:>6.2f}ms  {m['rate_realised']:>6.1f}/{m['rate_declared']:g}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
