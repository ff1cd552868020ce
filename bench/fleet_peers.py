"""The fleet benchmark's peers: the same no-op function on Celery, dask.distributed and
procrastinate.

Each runs the shape ``bench.fleet`` runs on corral's fleet, on the same machine and, for
Celery, the same Redis; for procrastinate, the same PostgreSQL:

- ``flat``: ``n`` independent tasks. Celery: a ``group`` of ``n`` signatures; dask:
  ``client.map``, then ``gather``.
- ``layered``: ``width`` chains of ``LAYERS`` tasks, each task after one task of the layer
  before (corral's layered DAG is exactly that). Celery: a ``group`` of ``chain``\\ s (a worker
  sends a chain's next task when one ends); dask: ``client.submit`` layer by layer, each
  future taking its predecessor, then ``gather`` of the last layer. procrastinate: not run
  (it has no chains; a job deferring the next would measure something else).

Celery, made as like corral's fleet as Celery allows (``bench/celery_app.py``):

- ``workers`` real ``celery worker`` processes, each a pool of ``concurrency`` threads (the
  ``--pool`` option): corral's worker runs ``call:`` tasks on a thread pool of
  ``--concurrency`` in one process; ``prefork`` would fork ``concurrency`` processes per worker.
- Redis as the broker, and the Redis result backend: that is how a Celery client learns
  that its tasks finished (``group.get()`` waits on the backend's pub/sub, it does not poll),
  as corral's coordinator learns it from each attempt's END on its reply stream. Without a
  result backend a Celery client cannot know when the work is done.
- Celery's defaults otherwise, which favour it: a task is acknowledged when a worker takes
  it (``task_acks_late`` off), where corral acknowledges only with the outcome recorded;
  JSON messages; a prefetch of 4 per thread.
- Its own Redis database (``/15`` of the broker's Redis), flushed before and after; workers
  are up (they answer a ping and ran a first round of tasks) before the clock starts.

procrastinate (``bench/procrastinate_app.py``): ``workers`` ``procrastinate worker`` processes
of ``concurrency`` each (LISTEN/NOTIFY), on the PostgreSQL broker's database in a schema of its
own (dropped after); the jobs deferred in one batch once the workers ran a first round, timed
until the last one succeeded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LAYERS = 20  # bench.fleet's layered DAG: LAYERS layers of n // LAYERS tasks
CELERY_DB = 15


def width(n: int) -> int:
    return max(1, n // LAYERS)


def count(shape: str, n: int) -> int:
    """How many tasks a shape of ``n`` really has (layered: a multiple of LAYERS)."""
    return n if shape == "flat" else width(n) * LAYERS


# ---------------------------------------------------------------------------------- dask
def dask_once(shape: str, n: int, workers: int) -> float:
    """Seconds to run the shape on a LocalCluster of ``workers`` single-threaded worker
    processes (started before the clock)."""
    from distributed import Client, LocalCluster

    from bench.tasks import noop

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        t0 = time.perf_counter()
        if shape == "flat":
            client.gather(client.map(noop, range(n), pure=False))
        else:
            futures = [client.submit(noop, pure=False) for _ in range(width(n))]
            for _ in range(LAYERS - 1):
                futures = [client.submit(noop, f, pure=False) for f in futures]
            client.gather(futures)
        return time.perf_counter() - t0


# ---------------------------------------------------------------------------------- celery
def celery_url(broker: str) -> str:
    """The broker's Redis, database CELERY_DB (flushed: keep nothing there)."""
    base = broker.partition("?")[0]
    scheme, _, rest = base.partition("://")
    host = rest.split("/", 1)[0]
    return f"{scheme}://{host}/{CELERY_DB}"


@contextlib.contextmanager
def celery_workers(url: str, workers: int, concurrency: int, pool: str) -> Any:
    """``workers`` Celery worker processes on ``url``, up and answering; yields the app."""
    import redis

    env = dict(os.environ, CORRAL_BENCH_CELERY_BROKER=url)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    redis.Redis.from_url(url).flushdb()
    log = tempfile.NamedTemporaryFile(prefix="bench-celery-", suffix=".log", delete=False)  # noqa: SIM115
    procs = [subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.celery_app",
                               "worker", "--pool", pool, "-c", str(concurrency),
                               "-n", f"w{k}@%h", "--without-gossip", "--without-mingle",
                               "--without-heartbeat", "--loglevel", "WARNING"], cwd=REPO,
                              env=env, stdout=log, stderr=log, start_new_session=True)
             for k in range(workers)]
    try:
        os.environ["CORRAL_BENCH_CELERY_BROKER"] = url
        from bench.celery_app import app, noop

        app.conf.broker_url = app.conf.result_backend = url
        deadline = time.monotonic() + 60
        while len(app.control.ping(timeout=0.5) or ()) < workers:
            dead = [p.returncode for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                log.flush()
                tail = Path(log.name).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the Celery workers did not come up (exit codes {dead}); "
                                   f"their log ends:\n{tail}")
        # A first round on every thread: imports done, connections made.
        from celery import group

        group(noop.s() for _ in range(workers * concurrency)).apply_async().get(timeout=60)
        yield app
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        log.close()
        os.unlink(log.name)
        redis.Redis.from_url(url).flushdb()


def celery_once(broker: str, shape: str, n: int, workers: int, concurrency: int,
                pool: str = "threads") -> float:
    """Seconds to run the shape on Celery (see the module's note for how it is set up)."""
    with celery_workers(celery_url(broker), workers, concurrency, pool):
        from celery import chain, group

        from bench.celery_app import noop

        if shape == "flat":
            work = group(noop.s() for _ in range(n))
        else:
            work = group(chain(noop.s() for _ in range(LAYERS)) for _ in range(width(n)))
        t0 = time.perf_counter()
        work.apply_async().get(timeout=600)
        return time.perf_counter() - t0


# ---------------------------------------------------------------------------------- procrastinate
def drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def procrastinate_once(dsn: str, n: int, workers: int, concurrency: int) -> float:
    """Seconds to run ``n`` procrastinate jobs of a no-op task (flat) on ``workers``
    ``procrastinate worker`` processes of ``concurrency`` each, in a schema of their own on
    the database at ``dsn``."""
    import secrets
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
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        drop_schema(dsn, schema)
