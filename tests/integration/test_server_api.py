"""The HTTP service, run for real: uvicorn on a free loopback port, driven with httpx.

One server (SQLite store in a tmp dir, every kind of auth configured) serves most tests; the
run-lifecycle test starts its own against SQLite and PostgreSQL. Timeouts are hang guards.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

pytest.importorskip("fastapi")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tests.helpers.live_server import LiveServer  # noqa: E402

from corral.server import AuthSettings, Settings, create_app  # noqa: E402
from corral.server._auth import hash_token  # noqa: E402
from corral.server._metrics import METRIC_NAMES  # noqa: E402

HANG_GUARD_S = 60.0
SECRET = "s3cret-" + "x" * 40
ISSUER = "corral-tests"
AUDIENCE = "corral"
STATIC_OPERATOR = "corral_static-operator-token-for-tests"
STATIC_VIEWER = "corral_static-viewer-token-for-tests"


# ---------------------------------------------------------------------------- harness

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _repo_on_path() -> Iterator[None]:
    """Tasks name ``tests.helpers.jobs:...``; the server runs them in this process."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(REPO))
        yield


def make_jwt(role: str | None = "viewer", *, key: Any = SECRET, alg: str = "HS256",
             headers: dict[str, Any] | None = None, **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": "tester", "iat": now, "exp": now + 600, "iss": ISSUER,
                               "aud": AUDIENCE}
    if role is not None:
        payload["role"] = role
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An RSA key (its public half as --jwt-public-key) and an EC key (in a JWKS file)."""
    folder = tmp_path_factory.mktemp("keys")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (folder / "rsa.pem").write_bytes(rsa_pem)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    jwk.update(kid="ec-1", alg="ES256", use="sig")
    (folder / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    return {"rsa": rsa_key, "rsa_pem": rsa_pem.decode(), "rsa_file": str(folder / "rsa.pem"),
            "ec": ec_key, "jwks_file": str(folder / "jwks.json")}


def settings_for(folder: Path, store_url: str, keys: dict[str, Any], **changes: Any) -> Settings:
    tokens = folder / "tokens.txt"
    tokens.write_text(f"# test tokens\n{hash_token(STATIC_OPERATOR)} operator ci-bot\n"
                      f"{hash_token(STATIC_VIEWER)} viewer dashboard\n")
    auth = AuthSettings(jwt_secret=SECRET, jwt_public_key=keys["rsa_file"],
                        jwks_file=keys["jwks_file"], jwt_issuer=ISSUER, jwt_audience=AUDIENCE,
                        api_tokens_file=str(tokens))
    return Settings(store_url=store_url, auth=auth, log_dir=folder / "logs",
                    pipelines_dir=folder / "pipelines", **changes)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Any]) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("server")
    settings = settings_for(folder, f"sqlite:///{folder / 'corral.db'}", keys,
                            max_body_bytes=256 * 1024, poll_interval=0.05)
    with LiveServer(create_app(settings)) as live:
        yield live


@pytest.fixture
def operator(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=bearer(make_jwt("operator")),
                      timeout=HANG_GUARD_S) as client:
        yield client


@pytest.fixture
def anon(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=HANG_GUARD_S) as client:
        yield client


def pipeline(name: str, tasks: str) -> str:
    return f"name: {name}\ntasks:\n{tasks}"


def submit(client: httpx.Client, text: str, **extra: Any) -> str:
    response = client.post("/api/v1/runs", json={"pipeline": text, **extra})
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def wait_done(client: httpx.Client, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        response = client.get(f"/api/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = response.json()
        if not doc["live"]:
            return doc
        assert time.monotonic() < deadline, f"run {run_id} did not finish"
        time.sleep(0.05)


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def sse_events(lines: Iterator[str], *, stop_after: int | None = None,
               stop: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
    """Parse an event stream into [{"id", "event", "data"}] until ``end``, ``stop_after``
    transitions or ``stop(event)``."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    transitions = 0
    for line in lines:
        if line == "":
            if "data" in current:
                current["data"] = json.loads(current["data"])
                current.setdefault("event", "message")
                events.append(current)
                if current["event"] == "transition":
                    transitions += 1
                if current["event"] == "end" or (stop is not None and stop(current)):
                    return events
                if stop_after is not None and transitions >= stop_after:
                    return events
            current = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field in ("id", "event", "data"):
            current[field] = value
    return events


def states(doc: dict[str, Any]) -> dict[str, str]:
    return {t["id"]: t["state"] for t in doc["tasks"]}


# ---------------------------------------------------------------------------- operations


def test_health_and_ready_need_no_token(anon: httpx.Client) -> None:
    assert anon.get("/health").json() == {"status": "ok"}
    ready = anon.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["store"] == "ok"


def test_page_docs_and_openapi_are_served(anon: httpx.Client) -> None:
    page = anon.get("/")
    assert page.status_code == 200
    assert "<svg id=\"dag\"" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert anon.get("/static/app.js").status_code == 200
    docs = anon.get("/docs")
    assert docs.status_code == 200
    assert "/static/swagger-ui/swagger-ui-bundle.js" in docs.text  # vendored: no CDN
    assert "https://" not in docs.text
    assert "script-src 'self'" in docs.headers["content-security-policy"]
    for asset in ("swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css", "docs.js"):
        assert anon.get(f"/static/{asset}").status_code == 200
    spec = anon.get("/openapi.json").json()
    paths = set(spec["paths"])
    for path in ("/api/v1/runs", "/api/v1/runs/{run_id}", "/api/v1/runs/{run_id}/cancel",
                 "/api/v1/runs/{run_id}/resume", "/api/v1/runs/{run_id}/events", "/api/v1/events",
                 "/api/v1/runs/{run_id}/tasks/{task_id}/log", "/api/v1/plan", "/api/v1/validate",
                 "/health", "/ready", "/metrics"):
        assert path in paths, path


# ---------------------------------------------------------------------------- run lifecycle

LIFECYCLE = """
name: lifecycle-{tag}
concurrency: 3
tasks:
  fetch: {{cmd: "echo fetched; echo to-stderr >&2"}}
  count:
    call: tests.helpers.jobs:compute
    kwargs: {{n: 5, scale: 2}}
    depends_on: [fetch]
  in_process:
    call: tests.helpers.jobs:compute
    kwargs: {{n: 3}}
    executor: process
    depends_on: [fetch]
  report: {{cmd: "echo ${{who}} done", depends_on: [count, in_process]}}
  speak: {{call: tests.helpers.jobs:say, args: ["said on a thread"], depends_on: [fetch]}}
"""


@pytest.mark.slow
def test_run_lifecycle(tmp_path: Path, store_url: str, keys: dict[str, Any]) -> None:
    """Submit shell and module:function tasks, poll to the end, read everything back."""
    settings = settings_for(tmp_path, store_url, keys)
    tag = secrets.token_hex(3)
    text = LIFECYCLE.format(tag=tag)
    with LiveServer(create_app(settings)) as live, httpx.Client(
            base_url=live.url, headers=bearer(make_jwt("operator")),
            timeout=HANG_GUARD_S) as client:
        accepted = client.post("/api/v1/runs", json={"pipeline": text, "params": {"who": "ops"}})
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        run_id = body["run_id"]
        assert body["status"] == "running"
        assert body["url"] == f"/api/v1/runs/{run_id}"
        # The run is in the store as soon as its id is returned.
        assert client.get(f"/api/v1/runs/{run_id}").status_code == 200

        doc = wait_done(client, run_id)
        assert doc["status"] == "succeeded", doc
        assert states(doc) == dict.fromkeys(("fetch", "count", "in_process", "report",
                                              "speak"), "succeeded")
        assert doc["params"] == {"who": "ops"}
        assert doc["counts"] == {"succeeded": 5}
        assert doc["critical_path"][0] == "fetch"
        assert doc["critical_path"][-1] == "report"
        tasks = {t["id"]: t for t in doc["tasks"]}
        assert tasks["report"]["deps"] == ["count", "in_process"]
        assert tasks["in_process"]["executor"] == "process"
        for task in tasks.values():
            assert task["attempts"] == 1
            assert task["duration_s"] is not None
            assert task["started_at"] <= task["finished_at"]
            (attempt,) = task["history"]
            assert attempt["state"] == "succeeded"
            assert attempt["end_s"] >= attempt["start_s"]
        assert doc["last_event_id"] > 0

        log = client.get(f"/api/v1/runs/{run_id}/tasks/report/log").json()
        assert log["text"] == "ops done\n"
        assert log["has_log"]
        fetched = client.get(f"/api/v1/runs/{run_id}/tasks/fetch/log").json()
        assert "fetched" in fetched["text"]
        assert "to-stderr" in fetched["text"]
        python_task = client.get(f"/api/v1/runs/{run_id}/tasks/count/log").json()
        assert python_task["has_log"] is False  # a thread task that printed nothing
        spoke = client.get(f"/api/v1/runs/{run_id}/tasks/speak/log").json()
        assert spoke["has_log"] is True  # one that printed has its log
        assert spoke["text"] == "said on a thread\n"

        listed = client.get("/api/v1/runs", params={"pipeline": f"lifecycle-{tag}"}).json()
        assert [r["run_id"] for r in listed["runs"]] == [run_id]
        assert listed["runs"][0]["status"] == "succeeded"
        assert listed["next_offset"] is None

        # The events of a finished run are replayed from the store, in order, then "end".
        with client.stream("GET", f"/api/v1/runs/{run_id}/events") as stream:
            events = sse_events(stream.iter_lines())
        transitions = [e for e in events if e["event"] == "transition"]
        assert [int(e["id"]) for e in transitions] == list(range(1, doc["last_event_id"] + 1))
        assert events[-1]["event"] == "end"
        assert events[-1]["data"]["status"] == "succeeded"
        # A replayed end carries what the live one did: the counts and the critical path.
        with client.stream("GET", f"/api/v1/runs/{run_id}/events",
                           params={"after": 3}) as stream:
            replayed = sse_events(stream.iter_lines())
        for end in (events[-1], replayed[-1]):
            assert end["event"] == "end"
            assert end["data"]["counts"] == {"succeeded": 5}
            assert end["data"]["critical_path"] == doc["critical_path"]
            assert end["data"]["duration_s"] is not None
            assert end["data"]["finished_at"] == doc["finished_at"]


# ---------------------------------------------------------------------------- runs API


def test_run_details_show_circuit_breaker_changes(operator: httpx.Client) -> None:
    name = f"breaker-{secrets.token_hex(3)}"
    text = (f"name: {name}\ncircuit_breakers:\n  svc: {{failures: 1, reset: 1h}}\ntasks:\n"
            "  a: {cmd: 'false', breaker: svc, allow_failure: true}\n"
            "  b: {cmd: 'true', breaker: svc, depends_on: [a]}\n")
    doc = wait_done(operator, submit(operator, text))
    assert doc["status"] == "failed"
    assert [(c["breaker"], c["state"]) for c in doc["breakers"]] == [("svc", "open")]
    tasks = {t["id"]: t for t in doc["tasks"]}
    assert tasks["b"]["error"].startswith("CircuitOpen: circuit breaker 'svc' is open")


def test_run_details_show_fanned_out_instances_and_the_context(
        operator: httpx.Client, tmp_path: Path) -> None:
    name = f"srvfan_{secrets.token_hex(4)}"
    (tmp_path / f"{name}.py").write_text(
        "import corral\n\ndef items():\n    return [1, 2]\n\n"
        "def double(x):\n    corral.context().update_with('seen', lambda n: n + 1, 0)\n"
        "    return 2 * x\n")
    text = (f"python_path: [{tmp_path}]\ntasks:\n  items: {{call: '{name}:items'}}\n"
            f"  double: {{call: '{name}:double', for_each: items}}\n")
    doc = wait_done(operator, submit(operator, text))
    assert doc["status"] == "succeeded"
    tasks = {t["id"]: t for t in doc["tasks"]}
    assert {"double[0]", "double[1]"} <= set(tasks)
    assert tasks["double[1]"]["state"] == "succeeded"
    assert tasks["double[1]"]["deps"] == ["items"]
    assert doc["context"] == {"seen": 2}


def test_list_runs_filters_and_pages(operator: httpx.Client) -> None:
    name = f"pages-{secrets.token_hex(3)}"
    ids = [submit(operator, pipeline(name, "  a: {cmd: 'true'}\n")) for _ in range(3)]
    for run_id in ids:
        wait_done(operator, run_id)
    first = operator.get("/api/v1/runs", params={"pipeline": name, "limit": 2}).json()
    assert len(first["runs"]) == 2
    assert first["next_offset"] == 2
    second = operator.get("/api/v1/runs", params={"pipeline": name, "limit": 2,
                                                  "offset": 2}).json()
    assert len(second["runs"]) == 1
    assert second["next_offset"] is None
    seen = [r["run_id"] for r in first["runs"] + second["runs"]]
    assert seen == ids[::-1]  # newest first
    ok = operator.get("/api/v1/runs", params={"pipeline": name, "status": "succeeded"}).json()
    assert len(ok["runs"]) == 3
    failed = operator.get("/api/v1/runs", params={"pipeline": name, "status": "failed"}).json()
    assert failed["runs"] == []
    bad = operator.get("/api/v1/runs", params={"status": "sideways"})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_request"


def test_log_tail_and_range(operator: httpx.Client) -> None:
    run_id = submit(operator, pipeline("logs", "  lines: {cmd: 'seq 1 100'}\n"))
    wait_done(operator, run_id)
    url = f"/api/v1/runs/{run_id}/tasks/lines/log"
    whole = operator.get(url).json()
    assert whole["text"] == "".join(f"{i}\n" for i in range(1, 101))
    assert whole["size"] == len(whole["text"])
    assert not whole["truncated"]
    tail = operator.get(url, params={"tail": 3}).json()
    assert tail["text"] == "98\n99\n100\n"
    assert tail["truncated"]
    first = operator.get(url, params={"offset": 0, "limit": 10}).json()
    assert first["text"] == "1\n2\n3\n4\n5\n"
    assert first["next_offset"] == 10
    rest = operator.get(url, params={"offset": first["next_offset"], "limit": 6}).json()
    assert rest["text"] == "6\n7\n8\n"
    assert operator.get(url, params={"attempt": 2}).status_code == 404
    missing = operator.get(f"/api/v1/runs/{run_id}/tasks/nope/log")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "task_not_found"


def test_failed_task_reports_attempts_error_and_exit_code(operator: httpx.Client) -> None:
    text = pipeline("flaky", "  boom: {cmd: 'echo trying; exit 3', retries: 1, "
                             "retry_delay: 0.05, retry_jitter: 0}\n")
    run_id = submit(operator, text)
    doc = wait_done(operator, run_id)
    assert doc["status"] == "failed"
    (task,) = doc["tasks"]
    assert task["state"] == "failed"
    assert task["attempts"] == 2
    assert [a["state"] for a in task["history"]] == ["failed", "failed"]
    assert [a["exit_code"] for a in task["history"]] == [3, 3]
    assert "exited with code 3" in task["error"]
    log = operator.get(f"/api/v1/runs/{run_id}/tasks/boom/log", params={"attempt": 1}).json()
    assert log["attempts"] == [1, 2]
    assert log["text"] == "trying\n"
    assert "exited with code 3" in log["error"]
    assert "CommandFailed" in log["traceback"]


def test_cancel_then_resume(operator: httpx.Client) -> None:
    text = pipeline("cancel-me", "  first: {cmd: 'echo one'}\n"
                                 "  slow: {cmd: 'sleep 30', depends_on: [first]}\n"
                                 "  after: {cmd: 'echo two', depends_on: [slow]}\n")
    run_id = submit(operator, text)
    wait_until(lambda: states(operator.get(f"/api/v1/runs/{run_id}").json())["slow"]
               == "running")
    # Resuming a running run is a conflict.
    conflict = operator.post(f"/api/v1/runs/{run_id}/resume")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "run_running"
    cancelled = operator.post(f"/api/v1/runs/{run_id}/cancel")
    assert cancelled.status_code == 202
    assert cancelled.json() == {"run_id": run_id, "status": "cancelling"}
    doc = wait_done(operator, run_id)
    assert doc["status"] == "interrupted"
    assert states(doc) == {"first": "succeeded", "slow": "cancelled", "after": "cancelled"}
    again = operator.post(f"/api/v1/runs/{run_id}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "run_finished"

    # Resume: "first" is reused; a faster "slow" is not possible (same file), so cancel it
    # again only after checking what the new run reused.
    resumed = operator.post(f"/api/v1/runs/{run_id}/resume")
    assert resumed.status_code == 202, resumed.text
    new = resumed.json()
    assert new["resumed_from"] == run_id
    assert new["reused"] == ["first"]
    assert new["rerun"] == {"slow": "cancelled", "after": "cancelled"}
    new_doc = operator.get(f"/api/v1/runs/{new['run_id']}").json()
    assert new_doc["resumed_from"] == run_id
    assert {t["id"]: t["reused"] for t in new_doc["tasks"]}["first"] is True
    twice = operator.post(f"/api/v1/runs/{run_id}/resume")
    assert twice.status_code == 409
    assert twice.json()["error"]["code"] == "already_resumed"
    operator.post(f"/api/v1/runs/{new['run_id']}/cancel")
    assert wait_done(operator, new["run_id"])["status"] == "interrupted"


def test_resume_of_a_succeeded_run_is_a_conflict(operator: httpx.Client) -> None:
    run_id = submit(operator, pipeline("done", "  a: {cmd: 'true'}\n"))
    wait_done(operator, run_id)
    response = operator.post(f"/api/v1/runs/{run_id}/resume")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "nothing_to_resume"


def test_resume_of_a_run_alive_in_another_process_is_a_conflict(
    tmp_path: Path, keys: dict[str, Any]
) -> None:
    from datetime import UTC, datetime

    from corral.store import RunRecord, StoredStatus, TaskSnapshot, open_store

    url = f"sqlite:///{tmp_path / 'corral.db'}"
    with open_store(url) as store:  # a CLI run elsewhere, holding its lease
        store.begin_run(RunRecord(
            id="elsewhere", pipeline="p", status=StoredStatus.RUNNING,
            tasks=(TaskSnapshot("a", (), "f", "shell"),), params={},
            started_at=datetime.now(UTC), host="other-host", user="u", pid=1,
            source_text=pipeline("p", "  a: {cmd: 'true'}\n"), lease_owner="u@other-host:1"),
            lease_s=600)
    with LiveServer(create_app(settings_for(tmp_path, url, keys))) as live, httpx.Client(
            base_url=live.url, headers=bearer(make_jwt("operator")),
            timeout=HANG_GUARD_S) as client:
        response = client.post("/api/v1/runs/elsewhere/resume")
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "run_running"
        assert "u@other-host:1" in response.json()["error"]["message"]
        assert [r["run_id"] for r in client.get("/api/v1/runs").json()["runs"]] == ["elsewhere"]


def test_pipeline_as_json_object_with_only(operator: httpx.Client) -> None:
    doc = {"name": "as-object", "tasks": {"a": {"cmd": "true"}, "b": {"cmd": "true",
                                                                         "depends_on": ["a"]},
                                          "c": {"cmd": "false"}}}
    run_id = submit(operator, doc, only=["b"])  # type: ignore[arg-type]
    done = wait_done(operator, run_id)
    assert done["status"] == "succeeded"
    assert states(done) == {"a": "succeeded", "b": "succeeded"}


# ---------------------------------------------------------------------------- plan, validate

PLANNED = """
name: planned
concurrency: 3
tasks:
  a: {cmd: "true", estimate: 2}
  b: {cmd: "true", depends_on: [a], estimate: 3}
  c: {cmd: "true", depends_on: [a], estimate: 1}
  d: {cmd: "true", depends_on: [b, c], estimate: 4}
  e: {cmd: "true", estimate: 5}
"""


def test_plan(operator: httpx.Client) -> None:
    response = operator.post("/api/v1/plan", json={"pipeline": PLANNED, "workers": 1})
    assert response.status_code == 200, response.text
    plan = response.json()
    assert plan["critical_path"] == ["a", "b", "d"]
    assert plan["critical_path_s"] == 9
    assert plan["work_s"] == 15
    assert plan["lower_bound_s"] == 15
    assert plan["levels"] == [["a", "e"], ["b", "c"], ["d"]]
    assert plan["width"] == 2
    default = operator.post("/api/v1/plan", json={"pipeline": PLANNED}).json()
    assert default["workers"] == 3  # the file's concurrency


def test_validate(operator: httpx.Client) -> None:
    good = operator.post("/api/v1/validate", json={"pipeline": PLANNED}).json()
    assert good == {"valid": True, "problems": [], "n_tasks": 5, "n_edges": 4}
    bad = operator.post("/api/v1/validate", json={
        "pipeline": "tasks:\n  a: {cmd: 'true', depends_on: [bb]}\n  b: {cmd: 'true'}\n",
        "file": "mine.yaml"})
    assert bad.status_code == 200
    doc = bad.json()
    assert doc["valid"] is False
    (problem,) = doc["problems"]
    assert problem["file"] == "mine.yaml"
    assert problem["line"] == 2
    assert "bb" in problem["message"]


def test_call_targets_are_found_by_validate_and_imported_by_runs(
        operator: httpx.Client, tmp_path: Path) -> None:
    # A module that says when it is imported: /validate (open to viewers) only finds it.
    name = f"srv_{secrets.token_hex(4)}"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\n\ndef fetch():\n    return 1\n")
    text = (f"python_path: [{tmp_path}]\ntasks:\n  a: {{call: '{name}:fetch'}}\n"
            f"  b: {{call: '{name}:fech'}}\n")
    doc = operator.post("/api/v1/validate", json={"pipeline": text, "file": "s.yaml"}).json()
    assert doc["valid"] is False
    (problem,) = doc["problems"]
    assert (problem["line"], problem["task"]) == (4, "b")
    assert f"call '{name}:fech'" in problem["message"]
    assert problem["hint"] == "did you mean 'fetch'?"
    assert not (tmp_path / "imported").exists()
    # Submitting imports it: the same problem, a 422, and nothing runs.
    error = assert_error(operator.post("/api/v1/runs", json={"pipeline": text}), 422,
                         "invalid_pipeline")
    assert [p["task"] for p in error["problems"]] == ["b"]
    assert (tmp_path / "imported").exists()
    # Text has no directory of its own: a relative python_path entry is a problem.
    relative = operator.post("/api/v1/validate", json={
        "pipeline": "python_path: [src]\ntasks:\n  a: {cmd: 'true'}\n"}).json()
    (problem,) = relative["problems"]
    assert problem["line"] == 1
    assert "is relative" in problem["message"]


def billion_laughs(levels: int) -> str:
    lines = ['x-lol0: &lol0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"x-lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("pipeline", "phrase"),
    [
        # 10**9 strings once expanded (the full bomb), and 10**7 (a smaller one).
        (billion_laughs(9) + "tasks: {a: {cmd: x, env: {V: *lol9}}}\n", "aliases expand"),
        (billion_laughs(7) + "tasks: {a: {call: 'm:f', kwargs: {v: *lol7}}}\n", "aliases expand"),
        ("tasks: {a: {call: 'm:f', args: " + "[" * 5000 + "]" * 5000 + "}}\n", "nested more"),
        ("tasks: {a: {cmd: x, timeout: " + "9" * 5000 + "}}\n", "5000 digits"),
        ("tasks: {a: {cmd: x, timeout: .nan}}\n", "finite"),
        ('{"tasks": {"a": {"cmd": "x", "retry_backoff": NaN}}}', "NaN"),
        ("tasks: {a: {cmd: !!python/object/apply:os.system ['true']}}\n", "not allowed"),
        ("tasks:\n" + "".join(f"  t{i}: {{cmd: x, depends_on: [u{i}]}}\n" for i in range(5000)),
         "unknown task"),
    ],
)
def test_validate_refuses_hostile_pipelines_cheaply(operator: httpx.Client, pipeline: str,
                                                    phrase: str) -> None:
    response = operator.post("/api/v1/validate", json={"pipeline": pipeline, "file": "p.yaml"})
    assert response.status_code == 200, response.text[:2000]
    doc = response.json()
    assert doc["valid"] is False
    assert phrase in doc["problems"][0]["message"]
    # Bounded: every problem quotes at most a short value, never an expansion.
    assert len(response.content) < 400 * len(doc["problems"])


@pytest.mark.parametrize(
    "body",
    [b'{"pipeline": {"tasks": {"a": {"cmd": "x", "timeout": NaN}}}}',
     b'{"pipeline": {"tasks": {"a": {"call": "m:f", "args": ' + b"[" * 100_000
     + b"]" * 100_000 + b"}}}}"],
    ids=["nan", "deep"],
)
def test_a_hostile_pipeline_object_is_a_client_error(operator: httpx.Client, body: bytes) -> None:
    response = operator.post("/api/v1/validate", content=body,
                             headers={"content-type": "application/json"})
    assert "Traceback" not in response.text
    assert response.status_code in (200, 400, 422), response.text[:2000]
    if response.status_code == 200:
        assert response.json()["valid"] is False


# ---------------------------------------------------------------------------- errors


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    error: dict[str, Any] = body["error"]
    assert set(error) == {"status", "code", "message", "problems", "fields", "request_id"}
    assert error["status"] == status
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return error


def test_invalid_pipelines_are_422_with_problems_and_lines(operator: httpx.Client) -> None:
    syntax = operator.post("/api/v1/runs", json={"pipeline": "tasks:\n  a: {cmd: 'x'\n  b: [\n",
                                                 "file": "broken.yaml"})
    error = assert_error(syntax, 422, "invalid_pipeline")
    assert error["problems"][0]["file"] == "broken.yaml"
    assert error["problems"][0]["line"] is not None
    unknown_dep = operator.post("/api/v1/runs", json={
        "pipeline": "tasks:\n  a: {cmd: 'true'}\n  b: {cmd: 'true', depends_on: [aa]}\n"})
    error = assert_error(unknown_dep, 422, "invalid_pipeline")
    (problem,) = error["problems"]
    assert problem["line"] == 3
    assert problem["task"] == "b"
    assert "'a'" in (problem["hint"] or "")
    cycle = operator.post("/api/v1/plan", json={
        "pipeline": "tasks:\n  a: {cmd: x, depends_on: [b]}\n  b: {cmd: x, depends_on: [a]}\n"})
    assert_error(cycle, 422, "invalid_pipeline")
    param = operator.post("/api/v1/runs", json={"pipeline": PLANNED, "params": {"nope": "1"}})
    assert_error(param, 422, "invalid_parameter")
    only = operator.post("/api/v1/runs", json={"pipeline": PLANNED, "only": ["zz"]})
    assert_error(only, 422, "invalid_pipeline")


def test_malformed_requests(operator: httpx.Client, server: LiveServer) -> None:
    not_json = operator.post("/api/v1/runs", content=b"{nope",
                             headers={"content-type": "application/json"})
    assert_error(not_json, 400, "malformed_body")
    missing = operator.post("/api/v1/runs", json={"params": {}})
    error = assert_error(missing, 422, "invalid_request")
    assert error["fields"][0]["loc"] == ["body", "pipeline"]
    extra = operator.post("/api/v1/runs", json={"pipeline": PLANNED, "concurency": 2})
    assert_error(extra, 422, "invalid_request")
    zero = operator.post("/api/v1/runs", json={"pipeline": PLANNED, "concurrency": 0})
    assert_error(zero, 422, "invalid_request")
    huge = operator.post("/api/v1/validate", json={"pipeline": "x" * 300_000})
    assert_error(huge, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap is counted while reading
        yield b'{"pipeline": "'
        for _ in range(300):
            yield b"x" * 1000
        yield b'"}'

    chunked = operator.post("/api/v1/validate", content=chunks(),
                            headers={"content-type": "application/json"})
    assert_error(chunked, 413, "payload_too_large")
    not_utf8 = operator.post("/api/v1/validate", content=b'{"pipeline": "\xff\xfe"}',
                             headers={"content-type": "application/json"})
    assert_error(not_utf8, 400, "malformed_body")
    allowed = operator.delete("/api/v1/runs")
    assert set(allowed.headers["allow"].split(", ")) == {"GET", "POST"}


def test_not_found_and_method_errors(operator: httpx.Client) -> None:
    assert_error(operator.get("/api/v1/runs/no-such-run"), 404, "run_not_found")
    assert_error(operator.post("/api/v1/runs/no-such-run/cancel"), 404, "run_not_found")
    assert_error(operator.post("/api/v1/runs/no-such-run/resume"), 404, "run_not_found")
    assert_error(operator.get("/api/v1/runs/no-such-run/events"), 404, "run_not_found")
    assert_error(operator.get("/api/v1/runs/no-such-run/tasks/a/log"), 404, "run_not_found")
    assert_error(operator.get("/api/v1/nothing-here"), 404, "not_found")
    assert_error(operator.delete("/api/v1/runs"), 405, "method_not_allowed")


def test_bad_last_event_id_is_400(operator: httpx.Client) -> None:
    run_id = submit(operator, pipeline("bad-id", "  a: {cmd: 'true'}\n"))
    response = operator.get(f"/api/v1/runs/{run_id}/events",
                            headers={"Last-Event-ID": "yesterday"})
    assert_error(response, 400, "bad_event_id")


# ---------------------------------------------------------------------------- events

CHAIN = "".join(f"  t{i}: {{cmd: 'sleep 0.15', depends_on: [t{i - 1}]}}\n" if i else
                "  t0: {cmd: 'sleep 0.15'}\n" for i in range(6))


def test_run_events_reconnect_with_last_event_id_misses_nothing(operator: httpx.Client) -> None:
    run_id = submit(operator, pipeline("chain", CHAIN))
    url = f"/api/v1/runs/{run_id}/events"
    with operator.stream("GET", url) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        first = sse_events(stream.iter_lines(), stop_after=4)
    assert first[0]["event"] == "run"
    got = [e for e in first if e["event"] == "transition"]
    last_id = got[-1]["id"]
    time.sleep(0.4)  # transitions happen while the client is away
    with operator.stream("GET", url, headers={"Last-Event-ID": last_id}) as stream:
        second = sse_events(stream.iter_lines())
    got += [e for e in second if e["event"] == "transition"]
    assert second[-1]["event"] == "end"
    assert second[-1]["data"]["status"] == "succeeded"

    ids = [int(e["id"]) for e in got]
    assert ids == list(range(1, len(ids) + 1))  # nothing missed, nothing twice
    doc = operator.get(f"/api/v1/runs/{run_id}").json()
    assert doc["last_event_id"] == len(ids)
    # Live events and the store's history agree, event for event.
    with operator.stream("GET", url, params={"after": 0}) as stream:
        replayed = [e for e in sse_events(stream.iter_lines()) if e["event"] == "transition"]

    def key(e: dict[str, Any]) -> tuple[Any, ...]:
        d = e["data"]
        return int(e["id"]), d["task"], d["state"], d["attempt"], d["run_id"]

    assert [key(e) for e in replayed] == [key(e) for e in got]
    finals = {e["data"]["task"]: e["data"]["state"] for e in got}
    assert finals == {f"t{i}": "succeeded" for i in range(6)}


def test_all_runs_stream_reconnect_misses_nothing(operator: httpx.Client) -> None:
    with operator.stream("GET", "/api/v1/events") as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        run_id = submit(operator, pipeline("global", CHAIN))
        first = sse_events(lines, stop=lambda e: e["event"] == "transition"
                           and e["data"]["run_id"] == run_id and e["data"]["task"] == "t1")
    last_id = first[-1]["id"]
    wait_done(operator, run_id)
    with operator.stream("GET", "/api/v1/events", headers={"Last-Event-ID": last_id}) as stream:
        second = sse_events(stream.iter_lines(), stop=lambda e: e["event"] == "end"
                            and e["data"]["run_id"] == run_id)
    mine = [e for e in first + second if e["data"].get("run_id") == run_id]
    numbers = [int(e["id"].split("-")[1]) for e in first + second]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert mine[0]["event"] == "run"
    assert mine[-1]["event"] == "end"
    seqs = [e["data"]["seq"] for e in mine if e["event"] == "transition"]
    assert seqs == list(range(1, len(seqs) + 1))
    # An id from another server process (or too old) gets "reset".
    with operator.stream("GET", "/api/v1/events",
                         headers={"Last-Event-ID": "deadbeef-12"}) as stream:
        (reset,) = sse_events(stream.iter_lines(), stop=lambda e: True)
    assert reset["event"] == "reset"


# ---------------------------------------------------------------------------- auth


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def alg_none_token() -> str:
    now = int(time.time())
    claims = {"sub": "evil", "role": "admin", "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


UNAUTHORIZED: list[tuple[str, Callable[[dict[str, Any]], dict[str, str]]]] = [
    ("missing", lambda k: {}),
    ("not bearer", lambda k: {"Authorization": f"Token {make_jwt('admin')}"}),
    ("bare scheme", lambda k: {"Authorization": "Bearer"}),
    ("malformed jwt", lambda k: bearer("abc.def.ghi")),
    ("expired", lambda k: bearer(make_jwt("admin", exp=int(time.time()) - 3600))),
    ("wrong signature", lambda k: bearer(make_jwt("admin", key="another-secret-" + "y" * 40))),
    ("alg none", lambda k: bearer(alg_none_token())),
    ("hs256 with the public key", lambda k: bearer(
        base64_forged_hs256(k["rsa_pem"]))),
    ("wrong issuer", lambda k: bearer(make_jwt("admin", iss="someone-else"))),
    ("wrong audience", lambda k: bearer(make_jwt("admin", aud="other-service"))),
    ("no exp", lambda k: bearer(make_jwt("admin", exp=None))),
    ("no audience", lambda k: bearer(make_jwt("admin", aud=None))),
    ("unknown static token", lambda k: bearer("corral_not-a-real-token")),
    ("unknown kid", lambda k: bearer(make_jwt("admin", key=k["ec"], alg="ES256",
                                              headers={"kid": "ec-2"}))),
    ("rs256 signed by another key", lambda k: bearer(make_jwt(
        "admin", key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        alg="RS256"))),
]


def base64_forged_hs256(public_pem: str) -> str:
    """An HS256 token whose HMAC key is the server's public key: the algorithm-confusion
    attack. PyJWT refuses to sign with a PEM key, so sign by hand."""
    import hashlib
    import hmac

    now = int(time.time())
    head = _b64({"alg": "HS256", "typ": "JWT"})
    body = _b64({"sub": "evil", "role": "admin", "exp": now + 600, "iss": ISSUER,
                 "aud": AUDIENCE})
    signature = hmac.new(public_pem.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


@pytest.mark.parametrize(("case", "make_headers"), UNAUTHORIZED, ids=[c for c, _ in UNAUTHORIZED])
def test_bad_tokens_are_401(anon: httpx.Client, keys: dict[str, Any], case: str,
                            make_headers: Callable[[dict[str, Any]], dict[str, str]]) -> None:
    for method, path in (("GET", "/api/v1/runs"), ("POST", "/api/v1/runs"),
                         ("GET", "/metrics")):
        response = anon.request(method, path, headers=make_headers(keys),
                                json={"pipeline": PLANNED} if method == "POST" else None)
        error = assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith('Bearer realm="corral"')
        assert error["message"]


def test_every_api_endpoint_needs_a_token(anon: httpx.Client, server: LiveServer) -> None:
    spec = anon.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        if path in ("/health", "/ready"):
            continue
        for method in operations:
            url = path.replace("{run_id}", "x").replace("{task_id}", "y")
            response = anon.request(method.upper(), url)
            assert response.status_code == 401, (method, path, response.text)


def test_roles(anon: httpx.Client, keys: dict[str, Any]) -> None:
    viewer = bearer(make_jwt("viewer"))
    assert anon.get("/api/v1/runs", headers=viewer).status_code == 200
    forbidden = anon.post("/api/v1/runs", headers=viewer, json={"pipeline": PLANNED})
    error = assert_error(forbidden, 403, "forbidden")
    assert "operator" in error["message"]
    assert_error(anon.post("/api/v1/runs/x/cancel", headers=viewer), 403, "forbidden")
    assert_error(anon.post("/api/v1/runs/x/resume", headers=viewer), 403, "forbidden")
    no_role = bearer(make_jwt(None))
    assert_error(anon.get("/api/v1/runs", headers=no_role), 403, "forbidden")
    assert anon.get("/api/v1/whoami", headers=no_role).json()["role"] == "none"
    unknown_role = bearer(make_jwt("superuser"))
    assert_error(anon.get("/api/v1/runs", headers=unknown_role), 403, "forbidden")
    operator = bearer(make_jwt("operator"))
    assert_error(anon.post("/api/v1/admin/prune", headers=operator,
                           json={"older_than_s": 1e9}), 403, "forbidden")
    admin = bearer(make_jwt(None, roles=["viewer", "admin"]))
    pruned = anon.post("/api/v1/admin/prune", headers=admin, json={"older_than_s": 1e9})
    assert pruned.status_code == 200
    assert pruned.json() == {"pruned": []}


def test_public_key_jwks_and_static_tokens(anon: httpx.Client, keys: dict[str, Any]) -> None:
    rs256 = bearer(make_jwt("viewer", key=keys["rsa"], alg="RS256"))
    me = anon.get("/api/v1/whoami", headers=rs256).json()
    assert me == {"subject": "tester", "role": "viewer", "via": "jwt", "auth_enabled": True}
    es256 = bearer(make_jwt("operator", key=keys["ec"], alg="ES256", headers={"kid": "ec-1"}))
    assert anon.get("/api/v1/whoami", headers=es256).json()["role"] == "operator"
    static = bearer(STATIC_OPERATOR)
    assert anon.get("/api/v1/whoami", headers=static).json() == {
        "subject": "ci-bot", "role": "operator", "via": "api-token", "auth_enabled": True}
    run = anon.post("/api/v1/runs", headers=static,
                    json={"pipeline": pipeline("by-token", "  a: {cmd: 'true'}\n")})
    assert run.status_code == 202
    viewer = bearer(STATIC_VIEWER)
    assert_error(anon.post("/api/v1/runs", headers=viewer, json={"pipeline": PLANNED}),
                 403, "forbidden")


def test_metrics_parse_and_have_the_names(operator: httpx.Client, anon: httpx.Client) -> None:
    run_id = submit(operator, pipeline("metrics", "  a: {cmd: 'true'}\n"
                                                  "  b: {cmd: 'exit 1', retries: 1, "
                                                  "retry_delay: 0.01, allow_failure: true}\n"))
    # a breaker that opens at its first failure: c's failure opens it
    wait_done(operator, submit(operator, "name: metrics-breaker\n"
                               "circuit_breakers: {svc: {failures: 1}}\n"
                               "tasks:\n  c: {cmd: 'exit 1', breaker: svc}\n"))
    wait_done(operator, run_id)
    assert anon.get("/metrics").status_code == 401
    response = operator.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(response.text))
    samples = {s.name: s for f in families for s in f.samples}
    names = {f.name for f in families} | set(samples)
    for name in METRIC_NAMES:
        assert name in names or f"{name}_bucket" in names, name
    for name in names:
        assert name == name.lower()
    assert "process_cpu_seconds_total" in names

    def value(name: str, **labels: str) -> float:
        return sum(s.value for f in families for s in f.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("corral_tasks_started_total", executor="shell") >= 3
    assert value("corral_tasks_finished_total", state="succeeded", executor="shell") >= 1
    assert value("corral_task_retries_total", executor="shell") >= 1
    assert value("corral_runs_finished_total", status="succeeded") >= 1
    assert value("corral_breaker_changes_total", breaker="svc", state="open") >= 1
    assert value("corral_store_write_seconds_count") > 0
    assert value("corral_scheduler_decision_seconds_count") > 0
    assert value("corral_task_duration_seconds_count", state="failed", executor="shell") >= 2
    assert value("corral_http_requests_total", route="/api/v1/runs", method="POST") >= 1


def test_metrics_can_be_public(tmp_path: Path, keys: dict[str, Any]) -> None:
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", keys,
                            metrics_public=True)
    with LiveServer(create_app(settings)) as live:
        assert httpx.get(f"{live.url}/metrics", timeout=HANG_GUARD_S).status_code == 200
        assert httpx.get(f"{live.url}/api/v1/runs", timeout=HANG_GUARD_S).status_code == 401


def test_logs_carry_run_and_task_ids(operator: httpx.Client,
                                     caplog: pytest.LogCaptureFixture) -> None:
    from corral.server._logs import JsonFormatter

    caplog.set_level("DEBUG", logger="corral.server")
    run_id = submit(operator, pipeline("logged", "  ok: {cmd: 'true'}\n"
                                                 "  bad: {cmd: 'exit 2'}\n"))
    wait_done(operator, run_id)
    about_run = [r for r in caplog.records if getattr(r, "run_id", None) == run_id]
    actions = {r.action for r in about_run}  # type: ignore[attr-defined]
    assert {"run_started", "task_failed", "run_finished"} <= actions
    for record in about_run:
        doc = json.loads(JsonFormatter().format(record))
        assert doc["run_id"] == run_id
        assert "task_id" in doc
        assert doc["action"]
    (failed,) = [r for r in about_run if r.action == "task_failed"]  # type: ignore[attr-defined]
    assert failed.task_id == "bad"  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- CLI


def test_token_create_makes_a_jwt_the_server_accepts(anon: httpx.Client) -> None:
    from click.testing import CliRunner

    from corral.server._cli import token

    result = CliRunner().invoke(token, ["create", "--role", "operator", "--ttl", "1h",
                                        "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE],
                                env={"CORRAL_JWT_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    value = result.output.strip()
    claims = jwt.decode(value, SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["role"] == "operator"
    assert 3500 <= claims["exp"] - claims["iat"] <= 3600
    assert anon.get("/api/v1/whoami", headers=bearer(value)).json()["role"] == "operator"
    short = CliRunner().invoke(token, ["create", "--jwt-secret", "short"])
    assert short.exit_code == 2
    assert "32 bytes" in short.output


def test_token_create_static_appends_a_hash(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from corral.server._auth import load_api_tokens
    from corral.server._cli import token

    file = tmp_path / "tokens.txt"
    result = CliRunner().invoke(token, ["create", "--static", "--role", "admin", "--subject",
                                        "deploy", "--api-tokens-file", str(file)])
    assert result.exit_code == 0, result.output
    value = result.stdout.strip()
    assert value.startswith("corral_")
    assert value not in file.read_text()
    assert load_api_tokens(file)[hash_token(value)][1] == "deploy"
    assert f"added an admin token for deploy to {file}" in result.stderr
    operator = CliRunner().invoke(token, ["create", "--static", "--role", "operator",
                                          "--api-tokens-file", str(file)])
    assert "added an operator token" in operator.stderr
    viewer = CliRunner().invoke(token, ["create", "--static", "--role", "viewer",
                                        "--api-tokens-file", str(file)])
    assert "added a viewer token" in viewer.stderr


def test_serve_help_shows_an_env_var_for_every_option() -> None:
    from click.testing import CliRunner

    from corral.server._cli import serve

    result = CliRunner().invoke(serve, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    for param in serve.params:
        if param.name == "help":
            continue
        assert isinstance(param.envvar, str), param.name
        assert param.envvar.startswith("CORRAL_")
        assert param.envvar in result.output, param.envvar


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
def test_serve_without_auth_binds_loopback_and_warns(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.server._cli", "serve", "--host", "0.0.0.0",
         "--port", str(port), "--store", f"sqlite:///{tmp_path / 'db.sqlite'}"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert health.json() == {"status": "ok"}
        # Without auth every caller is an admin...
        me = httpx.get(f"http://127.0.0.1:{port}/api/v1/whoami", timeout=5).json()
        assert me == {"subject": "anonymous", "role": "admin", "via": "no-auth",
                      "auth_enabled": False}
        # ...so it is reachable on loopback only.
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                                   text=True, check=False).stdout
        for line in listening.splitlines():
            local = line.split()[3]  # State Recv-Q Send-Q Local:Port Peer:Port
            assert local == f"127.0.0.1:{port}", listening
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hang
            proc.kill()
            _, err = proc.communicate()
    assert "AUTH IS OFF" in err
    assert "--host 0.0.0.0 ignored" in err


@pytest.mark.parametrize(("args", "command"), [(["serve"], "serve"),
                                               (["token", "create"], "token")])
def test_a_missing_server_extra_is_named_for_the_command_run(
        monkeypatch: pytest.MonkeyPatch, args: list[str], command: str) -> None:
    from click.testing import CliRunner

    from corral.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if it were not installed
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert f"corral {command} needs the server extra: pip install 'corral[server]'" in \
        result.output
    assert "fastapi is missing" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
