"""The real Redis of this machine, and real ``corral worker`` processes, for fleet tests.

``CORRAL_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). Each test gets its own
namespace (``?namespace=``: its own queues, dead letters and worker list), so tests running
at once on one Redis never see each other's keys; the namespace's keys are deleted after.
When Redis is unreachable a test that needs it skips, saying why, unless
``CORRAL_REQUIRE_SERVICES`` is set: then it fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.waiting import wait_for

REDIS_URL = os.environ.get("CORRAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REPO = Path(__file__).resolve().parents[2]

_problem: dict[str, str | None] = {}


def redis_problem() -> str | None:
    """Why Redis cannot be used (None: it can). Asked once per session."""
    if "redis" not in _problem:
        try:
            import redis

            client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
            client.ping()
            client.close()
            _problem["redis"] = None
        except Exception as exc:
            _problem["redis"] = f"Redis at {REDIS_URL} is unreachable: {exc}"
    return _problem["redis"]


def require_redis() -> None:
    problem = redis_problem()
    if problem is None:
        return
    if os.environ.get("CORRAL_REQUIRE_SERVICES"):
        pytest.fail(f"{problem} (and CORRAL_REQUIRE_SERVICES is set)")
    pytest.skip(problem)


def new_namespace_url() -> str:
    """A broker URL with a namespace of its own."""
    require_redis()
    sep = "&" if "?" in REDIS_URL else "?"
    return f"{REDIS_URL}{sep}namespace=test-{secrets.token_hex(6)}"


def drop_namespace(url: str) -> None:
    """Delete every key of ``url``'s namespace."""
    import redis

    namespace = url.rpartition("namespace=")[2]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"corral:{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextlib.contextmanager
def namespace_url() -> Iterator[str]:
    url = new_namespace_url()
    try:
        yield url
    finally:
        drop_namespace(url)


def worker_env(*paths: Path, **extra: str) -> dict[str, str]:
    """The environment of a test's worker: the repository importable (tests' modules), and
    ``paths`` before it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*map(str, paths), str(REPO),
                                                      env.get("PYTHONPATH")]))
    env.pop("CORRAL_CONCURRENCY", None)
    env.update(extra)
    return env


def start_worker(url: str, *args: str, env: dict[str, str] | None = None,
                 log: Path | None = None, may_die: bool = False) -> subprocess.Popen[bytes]:
    """A real ``corral worker`` on ``url``, started in its own session; waits until it has
    registered (or, ``may_die``, died: a test whose task kills its worker). Stop it with
    :func:`stop_worker` (or kill it)."""
    with contextlib.ExitStack() as stack:
        out: Any = subprocess.DEVNULL
        if log is not None:
            out = stack.enter_context(open(log, "ab"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral", "worker", "--broker", url, *args],
            cwd=REPO, env=env or worker_env(), stdout=out, stderr=out, start_new_session=True)
    from corral.fleet._broker import open_broker

    broker = open_broker(url)
    try:
        wait_for(lambda: proc.poll() is not None
                 or any(w.pid == proc.pid for w in broker.workers()),
                 "the worker to register")
    finally:
        broker.close()
    if proc.poll() is not None and not may_die:
        raise RuntimeError(f"corral worker exited with {proc.returncode}"
                           + (f": {log.read_text()}" if log is not None else ""))
    return proc


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker's whole session (it, its reaper and commands), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def free_port() -> int:
    """A TCP port nothing listens on now, for a server of the test's own."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def own_redis_server(port: int, *args: str) -> subprocess.Popen[bytes]:
    """A Redis server of the test's own on ``port`` (nothing on disk; ``args``: more of its
    options), answering when this returns; skips the test without ``redis-server``. Kill
    it when done."""
    import shutil

    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("no redis-server on this machine to start one of the test's own")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    wait_for(answers, "the test's own Redis to answer")
    client.close()
    return proc
