"""One runner on one workload, in a fresh process: ``python -m bench.child`` (used by the CLI).

Writes a JSON record to ``--out``: per-repetition wall times, sub-timings, peak RSS (this
process; and its children, which the process executors start), or the reason it was skipped,
or the error. With ``--profile`` it runs one repetition under pyinstrument and prints it.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.runners import Skip, load_runner
from bench.workloads import catalogue, data_dir, load


def _max_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def run(
    runner_name: str, workload_name: str, reps: int, data: Path, profile: bool = False
) -> dict[str, Any]:
    info = catalogue(data)[workload_name]
    record: dict[str, Any] = {
        "runner": runner_name,
        "workload": workload_name,
        "times": [],
        "extra": {},
    }
    workload = load(info)
    runner = load_runner(runner_name)(workload)
    try:
        runner.setup()
    except Skip as exc:
        record["skipped"] = str(exc)
        return record
    record["rss_setup_mb"] = _max_rss_mb(resource.RUSAGE_SELF)
    extra: dict[str, list[float]] = record["extra"]
    try:
        if profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005)
            gc.collect()
            profiler.start()
            t0 = time.perf_counter()
            runner.run_once()
            record["times"].append(time.perf_counter() - t0)
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False))
        else:
            for _ in range(reps):
                gc.collect()
                t0 = time.perf_counter()
                parts = runner.run_once()
                record["times"].append(time.perf_counter() - t0)
                for key, value in {**(parts or {}), **(runner.measure() or {})}.items():
                    extra.setdefault(key, []).append(value)
    except Exception:
        record["error"] = traceback.format_exc()
    finally:
        try:
            runner.teardown()
        except Exception:
            record.setdefault("error", traceback.format_exc())
    record["rss_peak_mb"] = _max_rss_mb(resource.RUSAGE_SELF)
    record["rss_children_peak_mb"] = _max_rss_mb(resource.RUSAGE_CHILDREN)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    parser.add_argument("--runner", required=True)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--data")
    parser.add_argument("--out", required=True)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    record = run(args.runner, args.workload, args.reps, data_dir(args.data), args.profile)
    Path(args.out).write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
