"""Backpressure on a real worker loop over a real broker (once per broker): while the broker
is saturated the worker claims smaller batches, and full ones again once it is not. The
saturation is the one seam (a real server cannot be filled to 85 % here without starving the
machine's other users); every claim goes to the real broker. Waits are hang guards."""

from __future__ import annotations

import asyncio
import threading

import pytest
from tests.helpers.brokers import BROKERS
from tests.helpers.waiting import wait_for

from corral.fleet._broker import open_broker
from corral.fleet._protocol import AttemptBody, AttemptMessage, BodyWriter
from corral.fleet._worker import Worker, WorkerOptions

pytestmark = pytest.mark.slow

BODY = BodyWriter().dump(AttemptBody(fn=len, args=("abc",), kwargs={}, env=None, cwd=None,
                                     heartbeat=None, log_path=None))


@pytest.fixture(params=sorted(BROKERS))
def broker(request):
    with BROKERS[request.param]() as url:
        b = open_broker(url, heartbeat_timeout=1.0)  # a beat (a saturation reading) each 0.25 s
        try:
            yield b
        finally:
            b.close()


class Counting:
    """The real broker, noting how many attempts each claim asks for."""

    def __init__(self, broker) -> None:
        self._broker = broker
        self.asked: list[int] = []

    def __getattr__(self, name):
        return getattr(self._broker, name)

    def claim(self, consumer, queues, count, *, block_s):
        self.asked.append(count)
        return self._broker.claim(consumer, queues, count, block_s=block_s)


def test_a_saturated_broker_gets_smaller_claims_until_it_recovers(broker, capfd):
    counting = Counting(broker)
    level = [1.0]
    worker = Worker(counting, WorkerOptions(concurrency=10, tick=0.05),
                    saturation=lambda: level[0])
    thread = threading.Thread(target=asyncio.run, args=(worker.run(),), daemon=True)
    thread.start()
    try:
        def batch(tag: str, n: int) -> None:
            messages = [AttemptMessage(id=f"{tag}:{k}:1", run_id="run", task_id=f"t{k}",
                                       queue="default", executor="thread", reply="run:s",
                                       body=BODY) for k in range(n)]
            broker.enqueue(messages)
            wait_for(lambda: broker.states([m.id for m in messages]) == ["done"] * n,
                     f"the {tag} batch to be done")

        wait_for(lambda: worker._factor == pytest.approx(0.1), "the worker to slow down")
        counting.asked.clear()
        batch("full", 10)
        assert max(counting.asked) == 1  # a tenth of 10 free slots
        level[0] = 0.0
        wait_for(lambda: worker._factor == 1.0, "the worker to recover")
        counting.asked.clear()
        batch("idle", 30)
        assert max(counting.asked) > 1  # its free slots again (one may be taken)
    finally:
        worker.stop()
        thread.join(60)
    err = capfd.readouterr().err
    assert "the broker is 100% full: claiming 10% of what it could, less often" in err
    assert "the broker is 0% full: claiming at full speed again" in err
