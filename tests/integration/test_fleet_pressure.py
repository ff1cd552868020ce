"""The coordinator under backpressure, on a real Redis of the test's own (its connection limit
is set low, and the test fills it: other tests' Redis is left alone) with a real worker.

While the broker is over 85 % full the run admits fewer attempts to the fleet; how many ran at
once is read from the order of the tasks' own start and end lines, never from a timing. Waits
are hang guards.
"""

from __future__ import annotations

import re
import socket
import threading

import pytest
from tests.helpers.fleet_tasks import most_at_once, overlapping
from tests.helpers.redis import free_port, own_redis_server, start_worker, stop_worker
from tests.helpers.waiting import wait_for

from corral import DAG
from corral.fleet._backpressure import BackpressurePolicy, admitted, factor

pytestmark = pytest.mark.slow

MAXCLIENTS = 200
WIDTH = 20  # the run's concurrency and the worker's: without backpressure, 20 run at once


def _connected(port: int) -> int:
    import redis

    client = redis.Redis(port=port)
    try:
        return int(client.info("clients")["connected_clients"]) - 1  # less this one
    finally:
        client.close()


def _hold(port: int, count: int) -> list[socket.socket]:
    """``count`` idle clients of the server (each answered a PING: counted by it)."""
    held = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"PING\r\n")
        assert s.recv(16).startswith(b"+PONG")
        held.append(s)
    return held


def test_a_saturated_broker_makes_the_run_admit_less_until_it_recovers(tmp_path, capfd):
    port = free_port()
    server = own_redis_server(port, "--maxclients", str(MAXCLIENTS))
    url = f"redis://127.0.0.1:{port}/0"
    journal = tmp_path / "journal"
    held: list[socket.socket] = []
    worker = start_worker(url, "--concurrency", str(WIDTH), log=tmp_path / "worker.log")
    try:
        # 97 % of its clients taken, the worker's among them; the run adds a few of its own
        # (still under the limit: nothing is refused).
        held = _hold(port, int(MAXCLIENTS * 0.97) - _connected(port))
        dag = DAG(concurrency=WIDTH)
        n = 100
        for k in range(n):
            dag.add(overlapping, str(journal), f"t{k}", 0.5, id=f"t{k}")
        outcome: dict[str, object] = {}
        runner = threading.Thread(daemon=True, target=lambda: outcome.setdefault(
            "result", dag.run(broker=url, handle_signals=False, log_dir=None)))
        runner.start()
        wait_for(lambda: journal.exists() and journal.read_text().count("- ") >= 10,
                 "ten tasks to end, saturated")
        with open(journal, "a") as f:
            f.write("released\n")
        for s in held:
            s.close()
        held = []
        runner.join(120)
        assert not runner.is_alive(), "hang guard: the run did not finish"
    finally:
        for s in held:
            s.close()
        stop_worker(worker)
        server.kill()
        server.wait()
    result = outcome["result"]
    assert result.ok, result
    lines = journal.read_text().splitlines()
    before = lines[:lines.index("released")]
    # Saturated at 95 % or more, the factor is at most this: so many attempts at once at most.
    cap = admitted(WIDTH, factor(BackpressurePolicy(), 0.95))
    assert cap < WIDTH / 2
    assert most_at_once(before) <= cap, before
    assert sorted(line for line in lines if line.startswith("+ ")) == sorted(
        f"+ t{k}" for k in range(n))
    err = capfd.readouterr().err
    slowed = re.search(r"corral: the broker is (\d+)% full: admitting (\d+)% of the attempts",
                       err)
    assert slowed, err
    assert int(slowed.group(1)) >= 95
    assert re.search(r"corral: the broker is \d+% full: admitting as many attempts as before",
                     err), err


def test_a_saturated_store_pool_scales_the_fleet_executors_down_and_back(capfd):
    from tests.helpers.redis import namespace_url

    from corral.executors.fleet import FleetExecutor
    from corral.fleet._coordinator import FleetSession
    from corral.store._connector import PoolStats

    pool = [PoolStats(size=10, max=10, active=10, idle=0, waiting=4)]  # the store's, as read
    with namespace_url() as url:
        session = FleetSession.connect(url, "run-pressure", pool_stats=lambda: pool[0])
        executor = FleetExecutor(session, capacity=WIDTH)
        told: list[int | None] = []
        executor.watch_slots(lambda e: told.append(e.slots))
        session.open()
        try:
            assert session.factor == pytest.approx(0.1)
            assert executor.slots == 2  # a tenth of 20
            pool[0] = PoolStats(size=10, max=10, active=1, idle=9, waiting=0)
            wait_for(lambda: executor.slots is None, "the session to read the pool again")
        finally:
            session.close()
    assert told == [2, 4, 8, 16, None]  # the factor doubled per reading, then no limit
    err = capfd.readouterr().err
    assert "corral: the store's connection pool is 100% in use: admitting 10% of" in err
    assert "corral: the store's connection pool is 10% in use: admitting as many attempts " \
        "as before" in err
