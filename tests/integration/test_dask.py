"""The dask executor on real clusters, beyond the conformance suite (which runs it on a local
cluster of its own per run): a cluster given by address, with a plain worker and a worker that
offers a ``gpu``, shared by this module's tests; worker processes that die; the CLI's
``--dask``. Timeouts here are hang guards only.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from distributed import Client, Nanny, Scheduler, SpecCluster
from tests.acceptance.conftest import HANG_GUARD_S, cli_env, corral_argv

from corral import DAG, TaskState
from corral._errors import BrokenExecutor, WorkerCrashed
from corral.executors.dask import DaskExecutor
from corral.store import open_store

S = TaskState

pytestmark = pytest.mark.slow

# A module the workers import (it is on their sys.path), as a pipeline's `call:` needs.
JOBS = '''
def double(x):
    print(f"doubling {x}")
    return 2 * x
'''


@dataclass
class Cluster:
    address: str
    jobs_dir: Path

    def workers(self) -> dict[str, dict[str, float]]:
        """Each worker's address and the resources it offers, once both are up."""
        with Client(self.address, set_as_default=False) as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(2, timeout=HANG_GUARD_S)
            info = client.scheduler_info()
        return {addr: w["resources"] for addr, w in info["workers"].items()}

    def gpu_worker(self) -> str:
        (address,) = [a for a, r in self.workers().items() if r.get("gpu")]
        return address


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A scheduler with two single-threaded worker processes, one offering ``gpu: 1``."""
    jobs_dir = tmp_path_factory.mktemp("dask-jobs")
    (jobs_dir / "dask_jobs.py").write_text(JOBS)
    quiet = {"silence_logs": logging.CRITICAL}
    # Worker processes start with this process's sys.path (also those a nanny restarts).
    sys.path.insert(0, str(jobs_dir))
    try:
        spec = SpecCluster(  # type: ignore[no-untyped-call]
            scheduler={"cls": Scheduler,
                       "options": {"dashboard_address": "127.0.0.1:0", "host": "127.0.0.1"}},
            workers={
                "plain": {"cls": Nanny, "options": {"nthreads": 1, **quiet}},
                "gpu": {"cls": Nanny,
                        "options": {"nthreads": 1, "resources": {"gpu": 1}, **quiet}},
            },
            **quiet,
        )
        try:
            yield Cluster(spec.scheduler_address, jobs_dir)
        finally:
            spec.close()
    finally:
        sys.path.remove(str(jobs_dir))


def on(cluster: Cluster, **kw: Any) -> dict[str, Any]:
    """dag.run() options for a run on ``cluster``."""
    return {"executors": {"dask": DaskExecutor(cluster.address)}, "handle_signals": False,
            "log_dir": None, **kw}


class Watch:
    """Every transition of a run."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def run_started(self, run: Any) -> None:
        self.events.append("started")

    def transitions(self, batch: Any) -> None:
        self.events.extend(batch)

    def run_finished(self, result: Any) -> None: ...


# --------------------------------------------------------------------------- tasks


def double(x: int) -> int:
    return 2 * x


def where() -> str:
    from distributed import get_worker

    return str(get_worker().address)


def chatty(seconds: float) -> None:
    """Alive only by its output: prints, never calls corral.heartbeat()."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        print("still here")
        time.sleep(0.1)


def die_once(counter: str) -> int:
    """Kills its own worker process the first time it runs."""
    path = Path(counter)
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    if n == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return n


# --------------------------------------------------------------------------- by address


def test_upstream_values_reach_downstream_tasks_and_listeners_see_the_worker(cluster):
    dag = DAG()
    a = dag.add(double, 3, id="a", options={"executor": "dask"})
    dag.add(double, a, id="b", options={"executor": "dask"})
    watch = Watch()
    result = dag.run(**on(cluster, listeners=[watch]))
    assert result.ok
    assert result["b"].value == 12
    workers = {t.worker for t in watch.events[1:] if t.state is S.SUCCEEDED}
    assert workers
    assert workers <= set(cluster.workers())


def test_resources_place_attempts_on_a_worker_that_offers_them(cluster):
    gpu = cluster.gpu_worker()
    dag = DAG(concurrency=4, resources={"gpu": 1})
    for k in range(3):
        dag.add(where, id=f"gpu{k}", options={"executor": "dask", "resources": {"gpu": 1}})
        dag.add(where, id=f"any{k}", options={"executor": "dask"})
    result = dag.run(**on(cluster))
    assert result.ok
    assert [result[f"gpu{k}"].value for k in range(3)] == [gpu] * 3


def test_resources_that_no_worker_offers_fail_the_attempt_clearly(cluster):
    dag = DAG(resources={"tpu": 1})
    dag.add(where, id="t", options={"executor": "dask", "resources": {"tpu": 1}})
    result = dag.run(**on(cluster))
    assert result["t"].state is S.FAILED
    error = result["t"].error
    assert isinstance(error, BrokenExecutor)
    assert "'tpu'" in str(error)
    assert cluster.address in str(error)
    assert "gpu" in str(error)  # what the workers do offer


def test_output_is_a_sign_of_life(cluster, tmp_path):
    dag = DAG()
    dag.add(chatty, 3, id="t", options={"executor": "dask", "heartbeat": 1.5})
    result = dag.run(**on(cluster, log_dir=tmp_path))  # output travels to the log
    assert result["t"].state is S.SUCCEEDED, result["t"].error_message()
    assert "still here\n" in Path(result["t"].log_path).read_text()


def test_a_worker_killed_mid_task_fails_the_attempt_and_the_policy_decides(cluster, tmp_path):
    dag = DAG(concurrency=2)
    dag.add(die_once, str(tmp_path / "retried"), id="retried",
            options={"executor": "dask", "retries": 1, "retry_delay": 0.01})
    dag.add(die_once, str(tmp_path / "once"), id="once", options={"executor": "dask"})
    watch = Watch()
    result = dag.run(**on(cluster, listeners=[watch], fail_fast=False))
    assert result["once"].state is S.FAILED
    assert isinstance(result["once"].error, WorkerCrashed)
    assert result["retried"].state is S.SUCCEEDED
    assert result["retried"].attempts == 2
    (first,) = [t for t in watch.events[1:] if t.task == "retried" and t.attempt == 1
                and t.state is S.RETRY_WAIT]
    assert isinstance(first.exception, WorkerCrashed)
    assert "died" in str(first.exception)


def test_a_worker_that_dies_and_is_not_replaced_fails_the_attempt(cluster, tmp_path):
    """Only a worker without a nanny offers ``lonely``; the task kills it. Dask would wait for
    another such worker forever; the attempt fails instead."""

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    worker = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", cluster.address, "--no-nanny",
         "--nthreads", "1", "--resources", "lonely=1", "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with Client(cluster.address, set_as_default=False) as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(3, timeout=HANG_GUARD_S)
        dag = DAG(resources={"lonely": 1})
        # the timeout is a hang guard: without the executor's watch it would fire instead
        dag.add(die, id="t", options={"executor": "dask", "resources": {"lonely": 1},
                                     "timeout": HANG_GUARD_S})
        result = dag.run(**on(cluster))
        assert result["t"].state is S.FAILED
        assert isinstance(result["t"].error, WorkerCrashed), result["t"].error_message()
        assert worker.wait(timeout=HANG_GUARD_S) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


# --------------------------------------------------------------------------- a cluster of its own


def test_a_timed_out_attempt_on_a_cluster_of_its_own_has_its_worker_killed(tmp_path):
    # Defined here, so that they travel by value: a fresh worker importing this module could
    # take longer than the timeout, which counts from the attempt's start.
    def sleep_with_pid(marker: str) -> None:
        import time

        # Written whole or not at all: the timeout may stop it mid-write on a loaded machine.
        Path(marker + ".tmp").write_text(str(os.getpid()))
        os.replace(marker + ".tmp", marker)
        time.sleep(60)

    def alive(marker: str) -> bool:
        """Whether the process whose pid is in ``marker`` still runs (no marker: it was
        stopped before it got that far, which a process that lives on would not be)."""
        if not Path(marker).exists():
            return False
        pid = int(Path(marker).read_text())
        try:
            return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    marker = str(tmp_path / "pid")
    dag = DAG(concurrency=2)
    dag.add(sleep_with_pid, marker, id="slow", options={"executor": "dask", "timeout": 2})
    # Runs once the slow one has timed out, on whichever worker is free (the other one, or a
    # fresh one in its place): the slow one's process must be gone by then.
    dag.add(alive, marker, id="check", options={"executor": "dask", "depends_on": ["slow"],
                                                "trigger_rule": "all_done"})
    # No executor given: the run makes its own (a local cluster, one worker per CPU up to
    # the concurrency), as a pipeline run without --dask does.
    result = dag.run(handle_signals=False, log_dir=None, fail_fast=False)
    assert result["slow"].state is S.FAILED
    assert result["check"].state is S.SUCCEEDED
    assert result["check"].value is False


def test_an_unreachable_scheduler_fails_the_run_before_it_starts(tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    dag = DAG("unreachable")
    dag.add(double, 1, id="t", options={"executor": "dask"})
    watch = Watch()
    with pytest.raises(BrokenExecutor, match=f"cannot connect to the Dask scheduler at {address}"):
        dag.run(executors={"dask": DaskExecutor(address, connect_timeout=1)}, store=store,
                listeners=[watch], handle_signals=False, log_dir=None)
    assert watch.events == []  # no listener heard of a run
    with open_store(store) as opened:
        assert opened.list_runs() == []  # and none was recorded


def test_a_malformed_address_is_a_clear_error_and_leaves_nothing_behind():
    import gc

    dag = DAG()
    dag.add(double, 1, id="t", options={"executor": "dask"})
    with pytest.raises(BrokenExecutor, match="cannot connect to the Dask scheduler at nowhere: "
                       "ValueError: missing port number"):
        dag.run(executors={"dask": DaskExecutor("nowhere")}, handle_signals=False,
                log_dir=None)
    gc.collect()  # a client left half made would complain now (warnings are errors here)


# --------------------------------------------------------------------------- the command line


def test_corral_run_with_dask_runs_on_the_scheduler_given(cluster, tmp_path):
    (tmp_path / "localonly.py").write_text("def f():\n    return 1\n")
    (tmp_path / "pipeline.yml").write_text(textwrap.dedent("""
        name: on-dask
        defaults: {executor: dask}
        tasks:
          a: {call: "dask_jobs:double", args: [21]}
          b: {call: "dask_jobs:double", args: [2]}
          # importable here, not on the workers
          local: {call: "localonly:f"}
    """))
    env = cli_env(tmp_path, {"PYTHONPATH": f"{tmp_path}{os.pathsep}{cluster.jobs_dir}"})
    proc = subprocess.run(
        corral_argv("run", "pipeline.yml", "--keep-going", "--json", "--dask", cluster.address),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S,
        check=False)
    assert proc.returncode == 1, proc.stderr  # `local` failed
    doc = json.loads(proc.stdout)
    tasks = doc["tasks"]
    assert tasks["a"]["state"] == "succeeded"
    assert tasks["a"]["executor"] == "dask"
    assert tasks["b"]["state"] == "succeeded"
    assert "doubling 21\n" in (tmp_path / tasks["a"]["log"]).read_text()
    assert tasks["local"]["state"] == "failed"
    assert "cannot import module 'localonly'" in tasks["local"]["error"]
    assert "Traceback" not in proc.stderr


def test_corral_run_with_an_unreachable_dask_scheduler_exits_5_and_records_nothing(tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    (tmp_path / "pipeline.yml").write_text(
        'tasks:\n  a: {call: "os:getpid", executor: dask}\n')
    env = cli_env(tmp_path, {"CORRAL_DASK_ADDRESS": address,
                             "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"})
    proc = subprocess.run(corral_argv("run", "pipeline.yml"), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S, check=False)
    assert proc.returncode == 5, proc.stderr
    assert f"cannot connect to the Dask scheduler at {address}" in proc.stderr
    assert "Traceback" not in proc.stderr
    with open_store(f"sqlite:///{tmp_path / '.corral' / 'corral.db'}") as opened:
        assert opened.list_runs() == []


def test_workers_without_the_same_corral_are_found():
    from corral.executors.dask import wrong_versions

    versions = {"workers": {
        "tcp://a:1": {"packages": {"corral": "1.0"}},
        "tcp://b:1": {"packages": {"corral": None}},
        "tcp://c:1": {"packages": {"corral": "0.9"}},
    }}
    assert wrong_versions(versions, "1.0") == {"tcp://b:1": None, "tcp://c:1": "0.9"}
    assert wrong_versions({"workers": {}}, "1.0") == {}


def _free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
