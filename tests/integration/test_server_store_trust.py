"""The server over a store it cannot trust: a run whose history holds a crafted pickle or
garbage is a structured 409 ``corrupt_history`` on every route that reads it (details, task
log, events, resume), never a 500, and nothing in the row is executed."""

from __future__ import annotations

import os
import pickle
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")

from tests.helpers.live_server import LiveServer  # noqa: E402

from corral.server import AuthSettings, Settings, create_app  # noqa: E402

HANG_GUARD_S = 60.0
SECRET = "s3cret-" + "y" * 40


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


def recorded_run(url: str) -> str:
    import corral

    dag = corral.DAG("served")
    dag.shell("a", "true")
    result = dag.run(store=url, log_dir=None, handle_signals=False)
    return result.run_id


@pytest.mark.parametrize("row", ["crafted pickle", "garbage"])
def test_a_corrupt_run_is_a_409_on_every_route_and_runs_nothing(tmp_path: Path, row: str):
    import jwt

    db = tmp_path / "corral.db"
    url = f"sqlite:///{db}"
    run_id = recorded_run(url)
    marker = tmp_path / "pwned"
    bad: Any = pickle.dumps([Payload(marker)]) if row == "crafted pickle" else b"\xff{not json"
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO batches (run_id, transitions, durations, task_values) "
                     "VALUES (?, ?, ?, ?)", (run_id, bad, bad, bad))
    settings = Settings(store_url=url, auth=AuthSettings(jwt_secret=SECRET),
                        log_dir=tmp_path / "logs", pipelines_dir=tmp_path / "pipelines")
    now = int(time.time())
    token = jwt.encode({"sub": "t", "role": "operator", "iat": now, "exp": now + 600}, SECRET,
                       algorithm="HS256")
    with LiveServer(create_app(settings)) as live, httpx.Client(
            base_url=live.url, headers={"Authorization": f"Bearer {token}"},
            timeout=HANG_GUARD_S) as client:
        for method, path in [("GET", f"/api/v1/runs/{run_id}"),
                             ("GET", f"/api/v1/runs/{run_id}/tasks/a/log"),
                             ("GET", f"/api/v1/runs/{run_id}/events"),
                             ("POST", f"/api/v1/runs/{run_id}/resume")]:
            response = client.request(method, path)
            assert response.status_code == 409, (path, response.text)
            error = response.json()["error"]
            assert error["code"] == "corrupt_history", (path, error)
            assert run_id in error["message"]
        listed = client.get("/api/v1/runs")
        assert listed.status_code == 200, listed.text  # the run records themselves are fine
        assert client.get("/ready").status_code == 200
    assert not marker.exists()
