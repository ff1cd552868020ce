"""The fleet's throughput: zero-duration ``call:`` tasks through a broker (Redis, PostgreSQL)
to ``corral worker``s, side by side with Celery, dask.distributed and procrastinate running
the same tasks on the same machine.

    python -m bench.fleet                      # both brokers, flat and layered, 1 and 2 workers
    python -m bench.fleet --peers celery,dask,procrastinate   # and the peers, in the same run
    python -m bench.fleet --tasks 200 --reps 1 --peers celery,dask,procrastinate   # smoke
    python -m bench.fleet --broker postgresql://postgres@127.0.0.1:5432/test   # one broker

For each broker (``--broker``, repeatable: Redis and PostgreSQL by default), each shape
(``flat``: N independent tasks; ``layered``: 20 layers, each task depending on one task of the
layer before) and each number of workers, it starts that many real ``corral worker`` processes
(``--concurrency`` each) on a namespace (Redis) or schema (PostgreSQL) of its own, runs the DAG
on them (the fleet executors ``dag.run(broker=...)`` makes) and reports, as the median of the
repetitions: tasks per second and wall time per task (worker start-up is not counted); and,
over every attempt of every repetition, the latency from admission to start, p50 and p99:
from the coordinator's ``time.time()`` when the run loop hands the attempt to the fleet
(``FleetSession.send``: admitted) to the worker's ``time.time()`` when it launches it (the
``at`` of its START, or of its END when both went in one batch). Both clocks are this host's
wall clock, so the difference is exact here; across hosts it would carry their clocks' skew.
It includes the wait in the queue: the run admits twice what the workers run at once.

``--peers celery,dask,procrastinate``: the same function, the same number of worker
processes, in the same run (``bench/fleet_peers.py`` says how each is set up, and why that is
the fair equivalent), with the ratio corral / peer of tasks per second. Celery runs on the
Redis broker's server, procrastinate on the PostgreSQL broker's (flat only: it has no chains).
Figures are wall-clock times: run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.fleet_peers import (
    LAYERS,
    celery_once,
    count,
    dask_once,
    drop_schema,
    procrastinate_once,
    width,
)

REPO = Path(__file__).resolve().parents[1]
PEERS = ("celery", "dask", "procrastinate")
DEFAULT_BROKERS = ["redis://127.0.0.1:6379/0", "postgresql://postgres@127.0.0.1:5432/test"]


def build(shape: str, n: int) -> Any:
    from bench.tasks import noop
    from corral import DAG

    dag = DAG(f"fleet-{shape}", concurrency=4096)
    if shape == "flat":
        for k in range(n):
            dag.add(noop, id=f"t{k}")
        return dag
    for layer in range(LAYERS):
        for k in range(width(n)):
            deps = [f"t{layer - 1}-{k}"] if layer else []
            dag.add(noop, id=f"t{layer}-{k}", options={"depends_on": deps})
    return dag


def start_workers(url: str, count: int, concurrency: int,
                  *extra: str) -> list[subprocess.Popen[bytes]]:
    """``count`` real ``corral worker`` processes (``extra``: more of its options), each in a
    session of its own, once every one of them has registered with the broker."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    procs = [subprocess.Popen([sys.executable, "-m", "corral", "worker", "--broker", url,
                               "--concurrency", str(concurrency), *extra], cwd=REPO, env=env,
                              stderr=subprocess.DEVNULL, start_new_session=True)
             for _ in range(count)]
    from corral.fleet._broker import open_broker

    broker = open_broker(url)
    try:
        deadline = time.monotonic() + 60
        while len(broker.workers()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not register within 60 s")
            time.sleep(0.05)
    finally:
        broker.close()
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    import signal

    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql:", "postgres:"))


def fresh_url(broker: str) -> str:
    """``broker`` with a namespace (Redis) or a schema (PostgreSQL) of its own."""
    sep = "&" if "?" in broker else "?"
    if is_postgres(broker):
        return f"{broker}{sep}schema=bench_{secrets.token_hex(4)}"
    return f"{broker}{sep}namespace=bench-{secrets.token_hex(4)}"


def drop(url: str) -> None:
    """Delete what the run left on the broker: its namespace's keys, or its schema."""
    if is_postgres(url):
        base, _, schema = url.rpartition("schema=")
        drop_schema(base.rstrip("?&"), schema)
        return
    import redis

    base, _, namespace = url.rpartition("?namespace=")
    client = redis.Redis.from_url(base)
    keys = list(client.scan_iter(match=f"corral:{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def fleet_run(url: str, dag: Any, concurrency: int) -> tuple[float, list[float]]:
    """Run ``dag`` on the fleet at ``url``: its wall time, and each attempt's delay from
    admission to start (the executors are the ones ``dag.run(broker=url)`` makes, built here
    so that the session's ``start_delays`` can be asked for)."""
    from corral.executors.fleet import fleet_executors
    from corral.fleet._coordinator import FleetSession

    t0 = time.perf_counter()
    session = FleetSession.connect(url, f"bench-{secrets.token_hex(4)}")
    session.start_delays = delays = []
    executors = fleet_executors(session, ["thread"], kinds={"thread": "callables"})
    result = dag.run(executors=executors, log_dir=None, handle_signals=False,
                     concurrency=concurrency)
    elapsed = time.perf_counter() - t0
    if not result.ok:
        raise RuntimeError(f"the run failed: {result}")
    return elapsed, delays


def fleet_once(broker: str, shape: str, n: int, workers: int,
               concurrency: int) -> tuple[float, list[float]]:
    url = fresh_url(broker)
    procs = start_workers(url, workers, concurrency)
    try:
        return fleet_run(url, build(shape, n), workers * concurrency * 2)
    finally:
        stop_workers(procs)
        drop(url)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest rank."""
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, max(0, round(q * len(ranked)) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", action="append", dest="brokers", metavar="URL",
                        help="a broker to measure (repeat for several)  [default: "
                        f"{', '.join(DEFAULT_BROKERS)}]")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--concurrency", type=int, default=32, help="per worker")
    parser.add_argument("--shapes", default="flat,layered")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--peers", default="",
                        help="comma-separated: celery (on the Redis broker's server), dask, "
                        "procrastinate (on the PostgreSQL broker's)")
    parser.add_argument("--celery-pool", default="threads",
                        help="the Celery workers' pool (threads: as corral's worker runs "
                             "call: tasks; prefork, solo)")
    args = parser.parse_args(argv)
    brokers = args.brokers or DEFAULT_BROKERS
    redis_url = next((b for b in brokers if not is_postgres(b)), DEFAULT_BROKERS[0])
    postgres_url = next((b for b in brokers if is_postgres(b)), DEFAULT_BROKERS[1])
    peers = [p for p in args.peers.split(",") if p]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peers {unknown}: choose among {', '.join(PEERS)}")
    rows: list[tuple[str, str, int, int, list[float], list[float]]] = []
    for shape in args.shapes.split(","):
        n = count(shape, args.tasks)
        for w in (int(x) for x in args.workers.split(",")):
            for broker in brokers:
                runs = [fleet_once(broker, shape, args.tasks, w, args.concurrency)
                        for _ in range(args.reps)]
                rows.append((f"corral ({'postgres' if is_postgres(broker) else 'redis'})",
                             shape, w, n, [t for t, _ in runs], [d for _, ds in runs for d in ds]))
            if "celery" in peers:
                rows.append(("celery", shape, w, n,
                             [celery_once(redis_url, shape, args.tasks, w, args.concurrency,
                                          args.celery_pool) for _ in range(args.reps)], []))
            if "dask" in peers:
                rows.append(("dask.distributed", shape, w, n,
                             [dask_once(shape, args.tasks, w) for _ in range(args.reps)], []))
            if "procrastinate" in peers and shape == "flat":
                rows.append(("procrastinate", shape, w, n,
                             [procrastinate_once(postgres_url, n, w, args.concurrency)
                              for _ in range(args.reps)], []))
    report(rows, args)
    return 0


def report(rows: list[tuple[str, str, int, int, list[float], list[float]]],
           args: argparse.Namespace) -> None:
    print(f"zero-duration tasks ({args.tasks} asked; layered: {LAYERS} layers), {args.reps} "
          f"repetitions (median, min-max); corral: {args.concurrency} per worker, Celery: "
          f"{args.celery_pool} pool of {args.concurrency}; admission to start over every "
          "attempt")
    print(f"{'runner':<18} {'shape':<8} {'workers':>7} {'tasks':>7} {'tasks/s':>10} "
          f"{'µs/task':>9} {'wall s (min-max)':>18} {'start p50 ms':>13} {'p99 ms':>8}")
    rate: dict[tuple[str, str, int], float] = {}
    for runner, shape, w, n, times, delays in rows:
        med = statistics.median(times)
        rate[runner, shape, w] = n / med
        latency = (f"{percentile(delays, 0.5) * 1e3:>13.2f} {percentile(delays, 0.99) * 1e3:>8.2f}"
                   if delays else f"{'-':>13} {'-':>8}")
        print(f"{runner:<18} {shape:<8} {w:>7} {n:>7} {n / med:>10,.0f} "
              f"{med / n * 1e6:>9.1f} {min(times):>8.2f}-{max(times):<8.2f} {latency}")
    ratios = []
    for (runner, shape, w), value in rate.items():
        for peer in ("celery", "dask.distributed", "procrastinate"):
            other = rate.get((peer, shape, w))
            if runner.startswith("corral") and other:
                ratios.append((runner, peer, shape, w, value / other))
    if ratios:
        print("tasks/s of corral's fleet over each peer's, same shape and workers:")
        for runner, peer, shape, w, ratio in ratios:
            print(f"  {runner:<17} / {peer:<16} {shape:<8} {w} workers: {ratio:.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
