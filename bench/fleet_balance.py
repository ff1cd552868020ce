"""Load balancing on the fleet: the makespan of a mix of short and long tasks on two workers of
different concurrency, by each queue strategy (docs/fleet.md, "Load balancing").

    python -m bench.fleet_balance                                  # Redis, the defaults
    python -m bench.fleet_balance --tasks 12 --reps 1 --long 0.2   # smoke
    python -m bench.fleet_balance --broker postgresql://postgres@127.0.0.1:5432/test

The DAG is ``--tasks`` independent ``sleep`` tasks, one in ``--every`` sleeping ``--long``
seconds and the others ``--short``, interleaved; the workers are real ``corral worker``
processes of concurrency ``--small`` and ``--large`` (``--weight`` each: their concurrency, for
``weighted``), on a namespace (Redis) or schema (PostgreSQL) of their own. The run admits as
many tasks at once as the two workers run, twice over, as ``bench.fleet`` does. For each
strategy (``pull``: the workers take what they have room for; the others: the coordinator
pushes each attempt to the worker the strategy chooses) it reports the median wall time of the
run over ``--reps`` repetitions, and each worker's share of the tasks. Expected:
``round_robin`` gives the small worker half the tasks and so a long queue; ``least_loaded``
sends by free capacity and finishes sooner; ``pull`` needs no dispatcher to do as well.
Figures are wall-clock times: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.fleet import drop, fresh_url, stop_workers

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ("pull", "round_robin", "least_loaded", "weighted", "random")


def build(n: int, every: int, short: float, long: float, strategy: str) -> Any:
    from bench.tasks import sleep_here
    from corral import DAG

    dag = DAG("fleet-balance", queues={"default": {"strategy": strategy}})
    for k in range(n):
        dag.add(sleep_here, long if k % every == 0 else short, id=f"t{k}")
    return dag


def start_workers(url: str, concurrencies: list[int]) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    procs = [subprocess.Popen([sys.executable, "-m", "corral", "worker", "--broker", url,
                               "--concurrency", str(c), "--weight", str(c)], cwd=REPO,
                              env=env, stderr=subprocess.DEVNULL, start_new_session=True)
             for c in concurrencies]
    from corral.fleet._broker import open_broker

    broker = open_broker(url)
    try:
        deadline = time.monotonic() + 60
        while len(broker.workers()) < len(procs):
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not register within 60 s")
            time.sleep(0.05)
    finally:
        broker.close()
    return procs


def once(broker: str, args: argparse.Namespace, strategy: str) -> tuple[float, list[int]]:
    """One run: its wall time, and how many tasks each worker (small, large) ran."""
    url = fresh_url(broker)
    procs = start_workers(url, [args.small, args.large])
    try:
        dag = build(args.tasks, args.every, args.short, args.long, strategy)
        t0 = time.perf_counter()
        result = dag.run(broker=url, log_dir=None, handle_signals=False,
                         concurrency=(args.small + args.large) * 2)
        elapsed = time.perf_counter() - t0
        if not result.ok:
            raise RuntimeError(f"the run failed: {result}")
        ran_on = Counter(r.value for r in result.tasks.values())  # sleep_here: the pid
        return elapsed, [ran_on[p.pid] for p in procs]
    finally:
        stop_workers(procs)
        drop(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0", metavar="URL")
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--every", type=int, default=5, help="one long task in this many")
    parser.add_argument("--short", type=float, default=0.02, help="seconds")
    parser.add_argument("--long", type=float, default=1.0, help="seconds")
    parser.add_argument("--small", type=int, default=1, help="the small worker's concurrency")
    parser.add_argument("--large", type=int, default=4, help="the large worker's concurrency")
    parser.add_argument("--strategies", default="pull,round_robin,least_loaded")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    strategies = [s for s in args.strategies.split(",") if s]
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        parser.error(f"unknown strategies {unknown}: choose among {', '.join(STRATEGIES)}")
    print(f"{args.tasks} sleep tasks (1 in {args.every}: {args.long} s, others {args.short} s) "
          f"on workers of concurrency {args.small} and {args.large}, {args.reps} repetitions "
          f"(median, min-max), {args.broker.partition('://')[0]} broker")
    print(f"{'strategy':<14} {'wall s':>8} {'min-max':>13} {'tasks small/large':>18}")
    for strategy in strategies:
        runs = [once(args.broker, args, strategy) for _ in range(args.reps)]
        times = [t for t, _ in runs]
        small, large = runs[-1][1]
        print(f"{strategy:<14} {statistics.median(times):>8.2f} "
              f"{min(times):>6.2f}-{max(times):<6.2f} {f'{small}/{large}':>18}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
