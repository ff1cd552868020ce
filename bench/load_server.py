"""A bounded load test of ``corral serve`` on loopback: N clients submit and poll small runs.

::

    python -m bench.load_server                    # 50 clients, 30 s, its own server
    python -m bench.load_server --clients 10 --duration 5
    python -m bench.load_server --url http://127.0.0.1:8470 --token "$TOKEN"   # a running one

Each client loops: ``POST /api/v1/runs`` (a two-task pipeline), then ``GET /api/v1/runs/{id}``
every ``--poll`` seconds until the run is no longer live. When the time is up the clients stop
submitting and finish the runs they have; then every submitted run is read back: a run that
is missing, or did not succeed, counts as lost. Reported: requests, errors, latency
percentiles (p50, p90, p99, max) per endpoint and overall, runs per second, lost runs.

Without ``--url`` the script starts a server in a subprocess (SQLite store and logs in a
temporary directory, an HS256 secret of its own) and stops it at the end. Only loopback
addresses are accepted as targets. Not part of the tests: run it by hand, on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

PIPELINES = {
    # Python calls on the thread executor: the API and the run loop are what is measured.
    "python": "name: load\ntasks:\n  a: {call: 'time:sleep', args: [0.01]}\n"
              "  b: {call: 'time:sleep', args: [0.01], depends_on: [a]}\n",
    # Shell tasks: adds a fork/exec per task (heavier on a 2-core machine).
    "shell": "name: load\ntasks:\n  a: {cmd: 'true'}\n  b: {cmd: 'true', depends_on: [a]}\n",
}


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    finished: int = 0

    def record(self, endpoint: str, seconds: float) -> None:
        self.latencies[endpoint].append(seconds)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def client(http: httpx.AsyncClient, stats: Stats, pipeline: str, until: float,
                 poll: float) -> None:
    while time.monotonic() < until:
        t0 = time.perf_counter()
        try:
            response = await http.post("/api/v1/runs", json={"pipeline": pipeline})
        except httpx.HTTPError as exc:
            stats.errors.append(f"POST /runs: {type(exc).__name__}: {exc}")
            continue
        stats.record("POST /runs", time.perf_counter() - t0)
        if response.status_code != 202:
            stats.errors.append(f"POST /runs: {response.status_code} {response.text[:200]}")
            continue
        run_id = response.json()["run_id"]
        stats.submitted.append(run_id)
        while True:  # a submitted run is followed to its end, even past the deadline
            await asyncio.sleep(poll)
            t0 = time.perf_counter()
            try:
                got = await http.get(f"/api/v1/runs/{run_id}")
            except httpx.HTTPError as exc:
                stats.errors.append(f"GET /runs/{{id}}: {type(exc).__name__}: {exc}")
                continue
            stats.record("GET /runs/{id}", time.perf_counter() - t0)
            if got.status_code != 200:
                stats.errors.append(f"GET /runs/{{id}}: {got.status_code} {got.text[:200]}")
                break
            if not got.json()["live"]:
                stats.finished += 1
                break


async def verify(http: httpx.AsyncClient, stats: Stats) -> list[str]:
    """Every submitted run, read back: the ids that are missing or did not succeed."""
    lost: list[str] = []
    for run_id in stats.submitted:
        response = await http.get(f"/api/v1/runs/{run_id}")
        if response.status_code != 200 or response.json()["status"] != "succeeded":
            lost.append(f"{run_id}: {response.status_code} "
                        f"{response.json().get('status', '') if response.is_success else ''}")
    return lost


async def load(url: str, token: str, *, clients: int, duration: float, poll: float,
               kind: str) -> dict[str, Any]:
    stats = Stats()
    limits = httpx.Limits(max_connections=clients + 5, max_keepalive_connections=clients + 5)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=60.0, limits=limits) as http:
        t0 = time.monotonic()
        until = t0 + duration
        await asyncio.gather(*(client(http, stats, PIPELINES[kind], until, poll)
                               for _ in range(clients)))
        elapsed = time.monotonic() - t0
        lost = await verify(http, stats)
    everything = [x for values in stats.latencies.values() for x in values]

    def summary(values: list[float]) -> dict[str, float]:
        return {"count": len(values), "p50_ms": percentile(values, 50) * 1000,
                "p90_ms": percentile(values, 90) * 1000,
                "p99_ms": percentile(values, 99) * 1000,
                "max_ms": max(values, default=float("nan")) * 1000}

    return {
        "clients": clients, "duration_s": duration, "elapsed_s": elapsed, "kind": kind,
        "runs_submitted": len(stats.submitted), "runs_finished": stats.finished,
        "runs_lost": lost, "runs_per_s": len(stats.submitted) / elapsed if elapsed else 0.0,
        "errors": stats.errors[:20], "error_count": len(stats.errors),
        "latency": {"all": summary(everything),
                    **{k: summary(v) for k, v in sorted(stats.latencies.items())}},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def own_server() -> Iterator[tuple[str, str]]:
    """A ``corral serve`` subprocess on a free loopback port; yields (url, operator token)."""
    from datetime import timedelta

    from corral.server._auth import make_jwt

    secret = secrets.token_urlsafe(48)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="corral-load-") as folder:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        env["CORRAL_JWT_SECRET"] = secret
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral.server._cli", "serve", "--port", str(port),
             "--store", f"sqlite:///{folder}/corral.db", "--log-level", "warning",
             "--log-dir", f"{folder}/logs"],
            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start: {proc.stderr.read()}"
                                     if proc.stderr else "the server did not start")
                time.sleep(0.1)
            yield url, make_jwt(secret, role="operator", ttl=timedelta(hours=1),
                                subject="load-test")
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def report(result: dict[str, Any]) -> str:
    lines = [
        f"corral serve load test: {result['clients']} clients, {result['duration_s']:g} s "
        f"({result['kind']} tasks), {result['elapsed_s']:.1f} s with the drain",
        f"runs: {result['runs_submitted']} submitted, {result['runs_finished']} followed to "
        f"the end, {len(result['runs_lost'])} lost; {result['runs_per_s']:.1f} runs/s",
        f"errors: {result['error_count']}",
        f"{'endpoint':<16} {'count':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for name, s in result["latency"].items():
        lines.append(f"{name:<16} {s['count']:>7} {s['p50_ms']:>8.1f} {s['p90_ms']:>8.1f} "
                     f"{s['p99_ms']:>8.1f} {s['max_ms']:>8.1f}")
    for error in result["errors"]:
        lines.append(f"  error: {error}")
    for lost in result["runs_lost"][:20]:
        lines.append(f"  lost: {lost}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load_server",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of submitting")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between polls")
    parser.add_argument("--kind", choices=sorted(PIPELINES), default="python")
    parser.add_argument("--url", help="a running server (loopback only); default: start one")
    parser.add_argument("--token", default=os.environ.get("CORRAL_TOKEN"),
                        help="an operator token for --url (or CORRAL_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 500 or not 0 < args.duration <= 600:
        parser.error("--clients must be 1..500 and --duration 0..600 s")

    def go(url: str, token: str) -> dict[str, Any]:
        return asyncio.run(load(url, token, clients=args.clients, duration=args.duration,
                                poll=args.poll, kind=args.kind))

    if args.url:
        host = urlsplit(args.url).hostname or ""
        if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
            parser.error("only loopback targets are allowed (127.0.0.0/8, localhost, ::1)")
        if not args.token:
            parser.error("--url needs --token (or CORRAL_TOKEN)")
        result = go(args.url, args.token)
    else:
        with own_server() as (url, token):
            result = go(url, token)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 1 if result["runs_lost"] or result["error_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
