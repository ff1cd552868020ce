"""The Celery side of ``python -m bench.fleet --peers celery``: one no-op task, a Redis broker
and result backend (``CORRAL_BENCH_CELERY_BROKER``, default ``redis://127.0.0.1:6379/0``)."""

from __future__ import annotations

import os

from celery import Celery

BROKER = os.environ.get("CORRAL_BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/0")

app = Celery("bench", broker=BROKER, backend=BROKER)
app.conf.update(worker_prefetch_multiplier=4, task_acks_late=False, result_expires=600,
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task(name="bench.noop")
def noop(*upstream: object) -> None:
    return None
