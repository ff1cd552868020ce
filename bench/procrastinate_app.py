"""The procrastinate side of ``python -m bench.fleet --peers procrastinate``: one no-op task
(the same body as corral's, ``bench.tasks.noop``, a sync function run in a thread), on the
PostgreSQL database and schema of ``CORRAL_BENCH_PROCRASTINATE_DSN`` (its ``search_path``)."""

from __future__ import annotations

import os

import procrastinate

from bench.tasks import noop as _noop

DSN = os.environ.get("CORRAL_BENCH_PROCRASTINATE_DSN", "postgresql://postgres@127.0.0.1:5432/test")

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=DSN))


@app.task(name="bench.noop")
def noop() -> None:
    _noop()
