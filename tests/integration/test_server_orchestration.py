"""``GET /health/orchestration`` and its metrics, on a real server: without a broker, with a
Redis broker and two real ``corral worker`` processes (a run submitted to the server goes to
them), with a PostgreSQL store (its pool's figures), and with a broker that stops answering
(a Redis of the test's own, paused with SIGSTOP). Timeouts are hang guards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tests.helpers.live_server import LiveServer  # noqa: E402
from tests.helpers.postgres import broker_url as pg_broker_url  # noqa: E402
from tests.helpers.postgres import schema_url  # noqa: E402
from tests.helpers.redis import (  # noqa: E402
    namespace_url,
    require_redis,
    start_worker,
    stop_worker,
)
from tests.helpers.waiting import wait_for  # noqa: E402

from corral.server import AuthSettings, Settings, create_app  # noqa: E402

HANG_GUARD_S = 60.0
SECRET = "orchestration-" + "y" * 40


def settings(tmp_path: Path, store_url: str | None = None, **kw: Any) -> Settings:
    return Settings(store_url=store_url or f"sqlite:///{tmp_path / 'corral.db'}",
                    log_dir=tmp_path / "logs", pipelines_dir=tmp_path / "pipelines",
                    metrics_public=True, mcp=False, **kw)


def health(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/health/orchestration")
    assert response.status_code in (200, 503), response.text
    body: dict[str, Any] = response.json()
    assert (response.status_code == 503) == (body["status"] == "unavailable"), body
    return body


def gauges(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(response.text) for s in f.samples}


def test_without_a_broker(tmp_path: Path) -> None:
    with LiveServer(create_app(settings(tmp_path))) as live, \
            httpx.Client(base_url=live.url, timeout=HANG_GUARD_S) as client:
        body = health(client)
        assert body["status"] == "ok", body
        assert body["reasons"] == []
        assert body["broker"] is None
        assert body["pools"] == []
        assert body["store"]["kind"] == "sqlite"
        assert body["store"]["pool"] is None
        coordinator = body["coordinator"]
        assert coordinator["status"] == "running"
        assert coordinator["accepting"] is True
        assert coordinator["live_runs"] == 0
        assert coordinator["uptime_s"] >= 0
        assert coordinator["started_at"].endswith("+00:00")
        metrics = gauges(client)
        assert ("corral_coordinator_uptime_seconds", ()) in metrics
        assert not any(name.startswith(("corral_fleet_", "corral_broker_"))
                       for name, _ in metrics)
        assert "/health/orchestration" in client.get("/openapi.json").json()["paths"]


def test_guarded_as_metrics_are(tmp_path: Path) -> None:
    """Without --metrics-public the report needs a viewer token, as /metrics does."""
    app = create_app(Settings(store_url=f"sqlite:///{tmp_path / 'corral.db'}",
                              auth=AuthSettings(jwt_secret=SECRET), log_dir=tmp_path / "logs",
                              pipelines_dir=tmp_path / "pipelines", mcp=False))
    with LiveServer(app) as live, httpx.Client(base_url=live.url,
                                               timeout=HANG_GUARD_S) as client:
        assert client.get("/health/orchestration").status_code == 401
        assert client.get("/metrics").status_code == 401
        assert client.get("/health").status_code == 200


def test_with_a_postgresql_store(tmp_path: Path) -> None:
    with schema_url() as url, LiveServer(create_app(settings(tmp_path, url))) as live, \
            httpx.Client(base_url=live.url, timeout=HANG_GUARD_S) as client:
        store = health(client)["store"]
        assert store["kind"] == "postgresql"
        pool = store["pool"]
        assert pool is not None
        assert pool["max"] == 4  # the store's default pool
        assert 1 <= pool["size"] <= pool["max"]
        assert pool["active"] + pool["idle"] == pool["size"]
        assert 0 <= pool["saturation"] <= 1
        metrics = gauges(client)
        assert metrics[("corral_store_pool_connections", (("state", "max"),))] == 4


GATED = """
name: gated
concurrency: 8
tasks:
{tasks}
"""


@pytest.mark.slow
def test_with_a_redis_broker_and_two_workers(tmp_path: Path) -> None:
    """Two workers (2 + 3 slots on queue default, the second also on gpu): counts by health
    and capacity; a run of 8 tasks that wait for a gate file fills the 5 slots and queues 3;
    once the gate opens, the pool has done 8 and its throughput is positive."""
    gate = tmp_path / "gate"
    waits = f'while [ ! -e {gate} ]; do sleep 0.02; done'
    text = GATED.format(tasks="\n".join(f'  t{i}: {{cmd: "{waits}"}}' for i in range(8)))
    with namespace_url() as url, contextlib.ExitStack() as stack:
        for args in (("-c", "2"), ("-c", "3", "-q", "default", "-q", "gpu")):
            proc = start_worker(url, *args, "--grace", "0")
            stack.callback(stop_worker, proc)
        live = stack.enter_context(LiveServer(create_app(settings(tmp_path, broker=url))))
        client = stack.enter_context(httpx.Client(base_url=live.url, timeout=HANG_GUARD_S))

        body = health(client)
        assert body["broker"]["reachable"] is True
        assert body["broker"]["error"] is None
        assert 0 <= body["broker"]["saturation"] <= 1
        pools = {p["queue"]: p for p in body["pools"]}
        assert set(pools) == {"default", "gpu"}
        default, gpu = pools["default"], pools["gpu"]
        assert default["workers"] == 2
        assert gpu["workers"] == 1
        assert default["starting"] + default["healthy"] == 2
        assert default["unhealthy"] == default["degraded"] == default["stopping"] == 0
        assert default["capacity"] == 5
        assert gpu["capacity"] == 3
        assert default["queued"] == 0
        assert default["running"] == 0
        listed = subprocess.run([sys.executable, "-m", "corral", "workers", "--broker", url,
                                 "--json"], capture_output=True, text=True, check=False,
                                timeout=HANG_GUARD_S)
        assert listed.returncode == 0, listed.stderr
        cli = {p["queue"]: p for p in json.loads(listed.stdout)["pools"]}
        assert cli["default"]["capacity"] == 5
        assert cli["gpu"]["workers"] == 1

        accepted = client.post("/api/v1/runs", json={"pipeline": text})
        assert accepted.status_code == 202, accepted.text
        run_id = accepted.json()["run_id"]

        def busy() -> bool:
            p = {p["queue"]: p for p in health(client)["pools"]}["default"]
            return p["running"] == 5 and p["queued"] == 3

        wait_for(busy, "the workers' 5 slots busy and 3 attempts queued")
        body = health(client)
        assert body["coordinator"]["live_runs"] == 1
        metrics = gauges(client)
        assert metrics[("corral_fleet_queue_depth", (("queue", "default"),))] == 3
        assert metrics[("corral_fleet_workers", (("health", "unhealthy"),
                                                  ("queue", "default")))] == 0
        assert sum(v for (name, labels), v in metrics.items() if name == "corral_fleet_workers"
                   and ("queue", "default") in labels) == 2
        assert metrics[("corral_broker_up", ())] == 1

        gate.touch()

        def finished() -> bool:
            run = client.get(f"/api/v1/runs/{run_id}").json()
            return not run["live"]

        wait_for(finished, "the run to end")
        assert client.get(f"/api/v1/runs/{run_id}").json()["status"] == "succeeded"

        def all_done() -> bool:  # the workers say so at their next beat
            p = {p["queue"]: p for p in health(client)["pools"]}["default"]
            return p["done"] == 8 and p["running"] == 0

        wait_for(all_done, "the workers to report 8 attempts done")
        default = {p["queue"]: p for p in health(client)["pools"]}["default"]
        assert default["queued"] == 0
        assert default["throughput_per_s"] >= 0
        assert default["healthy"] == 2  # both finished attempts, none failed
        assert health(client)["status"] == "ok"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of the test's own (it pauses it), on a free port; gone after."""
    require_redis()
    port = _free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        def answers() -> bool:
            client = redis.Redis(port=port, socket_connect_timeout=1)
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False
            finally:
                client.close()

        wait_for(answers, "the test's redis-server to answer")
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_a_broker_that_stops_answering(tmp_path: Path) -> None:
    """SIGSTOP the broker: the report says unavailable with the reason (the probe stuck on it
    is not started twice), /metrics still answers; SIGCONT: reachable again; killed: a
    submission is refused with 503 broker_unavailable."""
    with own_redis(tmp_path) as (url, redis_proc), \
            LiveServer(create_app(settings(tmp_path, broker=url))) as live, \
            httpx.Client(base_url=live.url, timeout=HANG_GUARD_S) as client:
        assert health(client)["broker"]["reachable"] is True
        os.kill(redis_proc.pid, signal.SIGSTOP)
        for _ in range(2):
            body = health(client)
            assert body["status"] == "unavailable", body
            assert body["broker"]["reachable"] is False
            assert "did not answer" in body["broker"]["error"]
            assert body["pools"] == []
            assert any("broker" in r for r in body["reasons"])
        assert gauges(client)[("corral_broker_up", ())] == 0
        os.kill(redis_proc.pid, signal.SIGCONT)
        wait_for(lambda: health(client)["broker"]["reachable"], "the broker to answer again")
        # Gone for good: a run submitted now is refused, as the store's absence would be.
        redis_proc.kill()
        redis_proc.wait()
        refused = client.post("/api/v1/runs", json={"pipeline": GATED.format(
            tasks='  a: {cmd: "true"}')})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "broker_unavailable"
        assert health(client)["status"] == "unavailable"


def test_with_a_postgresql_broker(tmp_path: Path) -> None:
    """The same report from the PostgreSQL broker: one worker, its pool, the saturation."""
    with pg_broker_url() as url, contextlib.ExitStack() as stack:
        proc = start_worker(url, "-c", "2", "--grace", "0")
        stack.callback(stop_worker, proc)
        live = stack.enter_context(LiveServer(create_app(settings(tmp_path, broker=url))))
        client = stack.enter_context(httpx.Client(base_url=live.url, timeout=HANG_GUARD_S))
        body = health(client)
        assert body["status"] == "ok", body
        assert body["broker"]["reachable"] is True
        assert 0 < body["broker"]["saturation"] <= 1  # its own connections count
        (pool,) = body["pools"]
        assert pool["queue"] == "default"
        assert pool["workers"] == 1
        assert pool["capacity"] == 2
        assert pool["queued"] == 0
