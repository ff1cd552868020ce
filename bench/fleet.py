"""The fleet's throughput: zero-duration ``call:`` tasks through a broker (Redis, PostgreSQL)
to ``corral worker``s.

    python -m bench.fleet                     # both brokers, flat and layered, 1 and 2 workers
    python -m bench.fleet --tasks 2000 --reps 1 --workers 1   # a smoke run
    python -m bench.fleet --broker postgresql://postgres@127.0.0.1:5432/test   # one broker
    python -m bench.fleet --peers dask                     # also dask.distributed, same tasks

For each broker (``--broker``, repeatable: Redis and PostgreSQL by default), each shape
(``flat``: N independent tasks; ``layered``: 20 layers, each task depending on one task of the
layer before) and each number of workers, it starts that many real ``corral worker`` processes
(``--concurrency`` each) on a namespace (Redis) or schema (PostgreSQL) of its own, runs the DAG
with ``dag.run(broker=...)`` and reports, as the median of the repetitions: tasks per second
and wall time per task (worker start-up is not counted). Figures are wall-clock times: run it
on a quiet machine. Not measured yet: latency from admission to start (p50, p99).

``--peers dask``: the same zero-duration function mapped on a ``dask.distributed`` LocalCluster
of as many single-threaded worker processes (flat only: ``client.map`` then ``gather``).
``--peers celery``: a group of as many no-op Celery tasks (``bench/celery_app.py``) on as many
Celery worker processes (thread pools of ``--concurrency``), Redis as broker and result
backend on database 15 of the same Redis (flushed before and after; ``pip install
'celery[redis]'``).
``--peers procrastinate``: as many procrastinate jobs of a no-op task
(``bench/procrastinate_app.py``) on as many ``procrastinate worker`` processes (``--concurrency``
each, LISTEN/NOTIFY), on the PostgreSQL broker's database in a schema of its own (dropped
after); deferred in one batch once the workers are up, timed until the last job succeeded
(``pip install procrastinate``).
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

REPO = Path(__file__).resolve().parents[1]
LAYERS = 20
DEFAULT_BROKERS = ["redis://127.0.0.1:6379/0", "postgresql://postgres@127.0.0.1:5432/test"]


def build(shape: str, n: int) -> Any:
    from bench.tasks import noop
    from corral import DAG

    dag = DAG(f"fleet-{shape}", concurrency=4096)
    if shape == "flat":
        for k in range(n):
            dag.add(noop, id=f"t{k}")
        return dag
    width = max(1, n // LAYERS)
    for layer in range(LAYERS):
        for k in range(width):
            deps = [f"t{layer - 1}-{k}"] if layer else []
            dag.add(noop, id=f"t{layer}-{k}", options={"depends_on": deps})
    return dag


def start_workers(url: str, count: int, concurrency: int) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    procs = [subprocess.Popen([sys.executable, "-m", "corral", "worker", "--broker", url,
                               "--concurrency", str(concurrency)], cwd=REPO, env=env,
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


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


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


def fleet_once(broker: str, shape: str, n: int, workers: int, concurrency: int) -> float:
    url = fresh_url(broker)
    procs = start_workers(url, workers, concurrency)
    try:
        dag = build(shape, n)
        t0 = time.perf_counter()
        result = dag.run(broker=url, log_dir=None, handle_signals=False,
                         concurrency=workers * concurrency * 2)
        elapsed = time.perf_counter() - t0
        if not result.ok:
            raise RuntimeError(f"the run failed: {result}")
        return elapsed
    finally:
        stop_workers(procs)
        drop(url)


def dask_once(n: int, workers: int) -> float:
    from distributed import Client, LocalCluster

    from bench.tasks import noop

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        t0 = time.perf_counter()
        client.gather(client.map(noop, range(n), pure=False))
        return time.perf_counter() - t0


def celery_once(broker: str, n: int, workers: int, concurrency: int) -> float:
    """``n`` no-op Celery tasks (a group), ``workers`` Celery worker processes of
    ``concurrency`` threads each, a Redis broker and result backend on a DB of their own."""
    import signal

    base = broker.partition("?")[0].rsplit("/", 1)[0] + "/15"  # a DB of its own, flushed
    env = dict(os.environ, CORRAL_BENCH_CELERY_BROKER=base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    import redis

    redis.Redis.from_url(base).flushdb()
    procs = [subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.celery_app",
                               "worker", "--pool", "threads", "-c", str(concurrency),
                               "-n", f"w{k}@%h", "--without-gossip", "--without-mingle",
                               "--without-heartbeat", "--loglevel", "WARNING"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True) for k in range(workers)]
    try:
        os.environ["CORRAL_BENCH_CELERY_BROKER"] = base
        from celery import group

        from bench.celery_app import app, noop

        app.conf.broker_url = app.conf.result_backend = base
        # Warm-up: the workers are up once a first round of tasks came back.
        group(noop.s() for _ in range(workers * concurrency)).apply_async().get(timeout=60)
        t0 = time.perf_counter()
        group(noop.s() for _ in range(n)).apply_async().get(timeout=600)
        return time.perf_counter() - t0
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        redis.Redis.from_url(base).flushdb()


def procrastinate_once(dsn: str, n: int, workers: int, concurrency: int) -> float:
    """``n`` procrastinate jobs of a no-op task, ``workers`` ``procrastinate worker``
    processes of ``concurrency`` each, in a schema of their own on the database at ``dsn``."""
    import signal
    from urllib.parse import quote

    import psycopg

    schema = f"bench_procrastinate_{secrets.token_hex(4)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    scoped = f"{dsn}{'&' if '?' in dsn else '?'}options={quote(f'-csearch_path={schema}')}"
    env = dict(os.environ, CORRAL_BENCH_PROCRASTINATE_DSN=scoped)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        import procrastinate

        from bench.procrastinate_app import app, noop

        connector = procrastinate.PsycopgConnector(conninfo=scoped)
        with app.replace_connector(connector), app.open():
            app.schema_manager.apply_schema()
            procs = [subprocess.Popen([sys.executable, "-m", "procrastinate", "--app",
                                       "bench.procrastinate_app.app", "worker",
                                       "--concurrency", str(concurrency)], cwd=REPO, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True) for _ in range(workers)]
            with psycopg.connect(scoped, autocommit=True) as conn:

                def succeeded() -> int:
                    row = conn.execute("SELECT count(*) FROM procrastinate_jobs "
                                       "WHERE status = 'succeeded'").fetchone()
                    return int(row[0]) if row else 0

                def wait_for(total: int, seconds: float) -> None:
                    deadline = time.monotonic() + seconds
                    while succeeded() < total:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"procrastinate did not finish {total} jobs "
                                               f"within {seconds:g} s")
                        time.sleep(0.02)

                # Warm-up: the workers are up once a first round of jobs succeeded.
                warm = workers * concurrency
                noop.batch_defer(*({} for _ in range(warm)))
                wait_for(warm, 60)
                t0 = time.perf_counter()
                noop.batch_defer(*({} for _ in range(n)))
                wait_for(warm + n, 600)
                return time.perf_counter() - t0
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        drop_schema(dsn, schema)


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
                        help="comma-separated: dask, celery (on the Redis broker's server), "
                        "procrastinate (on the PostgreSQL broker's)")
    args = parser.parse_args(argv)
    brokers = args.brokers or DEFAULT_BROKERS
    redis_url = next((b for b in brokers if not is_postgres(b)), DEFAULT_BROKERS[0])
    postgres_url = next((b for b in brokers if is_postgres(b)), DEFAULT_BROKERS[1])
    peers = args.peers.split(",")
    rows = []
    for shape in args.shapes.split(","):
        for w in (int(x) for x in args.workers.split(",")):
            for broker in brokers:
                kind = "postgres" if is_postgres(broker) else "redis"
                times = [fleet_once(broker, shape, args.tasks, w, args.concurrency)
                         for _ in range(args.reps)]
                rows.append((f"corral ({kind})", shape, w, times))
            if shape != "flat":
                continue
            if "dask" in peers:
                rows.append(("dask.distributed", shape, w,
                             [dask_once(args.tasks, w) for _ in range(args.reps)]))
            if "celery" in peers:
                rows.append(("celery", shape, w,
                             [celery_once(redis_url, args.tasks, w, args.concurrency)
                              for _ in range(args.reps)]))
            if "procrastinate" in peers:
                rows.append(("procrastinate", shape, w,
                             [procrastinate_once(postgres_url, args.tasks, w, args.concurrency)
                              for _ in range(args.reps)]))
    print(f"{args.tasks} zero-duration tasks, {args.reps} repetitions (median, min-max)")
    print(f"{'runner':<18} {'shape':<8} {'workers':>7} {'tasks/s':>10} {'µs/task':>9} "
          f"{'wall s (min-max)':>18}")
    for runner, shape, w, times in rows:
        med = statistics.median(times)
        print(f"{runner:<18} {shape:<8} {w:>7} {args.tasks / med:>10,.0f} "
              f"{med / args.tasks * 1e6:>9.1f} {min(times):>8.2f}-{max(times):<8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
