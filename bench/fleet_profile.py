"""Where the fleet's coordinator spends its time: cProfile of every thread, or instructions.

    python -m bench.fleet_profile --shape layered --tasks 2000            # cProfile, top 40
    python -m bench.fleet_profile --shape layered --callgrind 1000,3000    # instructions/task

Real ``corral worker`` processes (``--workers``, ``--concurrency`` each) take the attempts, as
in ``bench.fleet``; only the coordinator (the process that runs the DAG) is measured.

- Default: the run in this process under cProfile, on all three of the coordinator's
  threads (the run loop, the session's sender and reader: each gets a profiler of its own,
  merged), timed by each thread's CPU time (``time.thread_time``: a thread blocked on a
  socket costs nothing), sorted by own time.
- ``--callgrind N1,N2``: the run as a child process under ``valgrind --tool=callgrind``
  (instruction counts, which the load of a shared machine does not change the way it changes
  wall time), at two sizes; prints each total and the difference per task, which leaves out
  start-up (imports, connecting). Valgrind slows the coordinator some 50x, so the workers
  wait on it and its batches are fuller than at full speed: compare counts with counts.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import os
import pstats
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.fleet import REPO, build, drop, fleet_run, start_workers, stop_workers
from bench.fleet_peers import count


def profiled_run(url: str, shape: str, n: int, concurrency: int, top: int) -> None:
    """The run under cProfile, each of the session's threads with a profiler of its own."""
    from corral.fleet._coordinator import FleetSession

    profiles: list[tuple[str, cProfile.Profile]] = []
    originals = {name: getattr(FleetSession, name) for name in ("_send_loop", "_read_loop")}

    def wrap(loop: Callable[[Any], None]) -> Callable[[Any], None]:
        @functools.wraps(loop)
        def profiled(self: Any) -> None:
            profile = cProfile.Profile(time.thread_time)
            profiles.append((loop.__name__, profile))
            profile.runcall(loop, self)

        return profiled

    for name, loop in originals.items():
        setattr(FleetSession, name, wrap(loop))
    dag = build(shape, n)
    main = cProfile.Profile(time.thread_time)
    try:
        main.runcall(fleet_run, url, dag, concurrency)
    finally:
        for name, loop in originals.items():
            setattr(FleetSession, name, loop)
    for name, profile in [("run loop", main), *profiles]:
        print(f"{name}: {pstats.Stats(profile).total_tt:.3f} s of CPU")  # type: ignore[attr-defined]
    stats = pstats.Stats(main)
    for _, profile in profiles:
        stats.add(profile)
    stats.sort_stats("tottime").print_stats(top)


def coordinator(url: str, shape: str, n: int, concurrency: int) -> None:
    """The child under callgrind: build and run the DAG, nothing else."""
    fleet_run(url, build(shape, n), concurrency)


def instructions(url: str, shape: str, n: int, concurrency: int) -> int:
    """Instructions the coordinator process executed for a run of ``n`` tasks."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        sys.executable, "-m", "bench.fleet_profile", "--coordinator", url,
                        "--shape", shape, "--tasks", str(n),
                        "--run-concurrency", str(concurrency)],
                       cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if found is None:
            raise RuntimeError(f"no instruction total in {out}")
        return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default=os.environ.get("CORRAL_BROKER",
                                                           "redis://127.0.0.1:6379/0"))
    parser.add_argument("--shape", default="layered", choices=("flat", "layered"))
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32, help="per worker")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--callgrind", metavar="N1,N2", default="")
    parser.add_argument("--coordinator", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--run-concurrency", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.coordinator:
        coordinator(args.coordinator, args.shape, args.tasks, args.run_concurrency)
        return 0
    concurrency = args.workers * args.concurrency * 2  # as bench.fleet runs it
    url = (f"{args.broker}{'&' if '?' in args.broker else '?'}"
           f"namespace=bench-{secrets.token_hex(4)}")
    procs = start_workers(url, args.workers, args.concurrency)
    try:
        if not args.callgrind:
            profiled_run(url, args.shape, args.tasks, concurrency, args.top)
            return 0
        sizes = [count(args.shape, int(x)) for x in args.callgrind.split(",")]
        totals = [instructions(url, args.shape, n, concurrency) for n in sizes]
        for n, total in zip(sizes, totals, strict=True):
            print(f"{args.shape} {n:>7} tasks: {total:>15,} instructions")
        if len(sizes) == 2:
            per_task = (totals[1] - totals[0]) / (sizes[1] - sizes[0])
            print(f"{args.shape}: {per_task:,.0f} instructions per task (the difference)")
    finally:
        stop_workers(procs)
        drop(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

