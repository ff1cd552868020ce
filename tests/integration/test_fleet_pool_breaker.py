"""A queue's pool breaker with real workers, once per broker (real Redis and PostgreSQL): tasks
that kill their workers open the breaker of their queue; its next task waits (or fails at
once) while the tasks of another queue run as usual; after the reset a probe that succeeds
closes it. Waits are hang guards; nothing asserts how long anything took."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading

import pytest
from tests.helpers.brokers import BROKERS
from tests.helpers.fleet_tasks import kill_my_worker, ran, starts
from tests.helpers.redis import REPO, start_worker, stop_worker, worker_env
from tests.helpers.waiting import wait_for

from corral import DAG, TaskState
from corral._errors import WorkerCrashed

pytestmark = pytest.mark.slow

GENEROUS_S = 180.0  # a hang guard for a loaded 2-core machine
# Two workers of queue `bad`, restarted by their supervisor when a task kills one; the other
# takes over the dead one's attempt after a second's silence and, that attempt having been
# handed out once already, dead-letters it: a WorkerCrashed for the run.
BAD_POOL = ("--queue", "bad", "--concurrency", "1", "--min-workers", "2", "--max-workers", "2",
            "--heartbeat-timeout", "1s", "--max-deliveries", "1", "--scale-interval", "0.3s")


@pytest.fixture(params=sorted(BROKERS))
def url(request):
    with BROKERS[request.param]() as u:
        yield u


@contextlib.contextmanager
def fleet(url, tmp_path):
    """The `bad` queue's pool and one plain worker of queue `good`, ended afterwards."""
    log = tmp_path / "workers.log"
    with open(log, "ab") as out:
        pool = subprocess.Popen([sys.executable, "-m", "corral", "worker", "--broker", url,
                                 *BAD_POOL], cwd=REPO, env=worker_env(), stdout=out,
                                stderr=out, start_new_session=True)
    good = start_worker(url, "--queue", "good", "--concurrency", "2", log=log)
    from corral.fleet._broker import open_broker

    broker = open_broker(url)
    try:
        wait_for(lambda: sum("bad" in w.queues and w.state == "running"
                             for w in broker.workers()) >= 2,
                 "the bad queue's two workers to register", GENEROUS_S)
        yield log
    finally:
        broker.close()
        stop_worker(good)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pool.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            pool.wait(GENEROUS_S)
        stop_worker(pool)  # and, as a hang guard, whatever is left of its session


def test_crashing_workers_open_their_queues_breaker_and_a_probe_closes_it(url, tmp_path):
    journal = tmp_path / "journal"
    dag = DAG(concurrency=4)
    # Two poisons in a row on `bad` (the second only after the first), then a sound task
    # there: it meets the open breaker, waits for the reset and runs as the probe. The run
    # goes on after a failure (fail_fast=False): `good`'s tasks all run whatever `bad` does.
    after = {"queue": "bad", "trigger_rule": "all_done"}
    dag.add(kill_my_worker, id="p0", options={"queue": "bad"})
    dag.add(kill_my_worker, id="p1", options={**after, "depends_on": ["p0"]})
    dag.add(ran, str(journal), "probe", 0.0, id="probe",
            options={**after, "depends_on": ["p1"]})
    for k in range(6):
        dag.add(ran, str(journal), f"g{k}", 0.2, id=f"g{k}", options={"queue": "good"})
    outcome: dict[str, object] = {}
    with fleet(url, tmp_path):
        runner = threading.Thread(daemon=True, target=lambda: outcome.setdefault(
            "result", dag.run(broker=url, handle_signals=False, log_dir=None,
                              fail_fast=False, pool_breaker={"failures": 2, "reset": "2s"})))
        runner.start()
        runner.join(GENEROUS_S)
        assert not runner.is_alive(), "hang guard: the run did not finish"
    result = outcome["result"]
    for poison in ("p0", "p1"):
        assert isinstance(result[poison].error, WorkerCrashed), result[poison]
    assert result["probe"].state is TaskState.SUCCEEDED
    assert all(result[f"g{k}"].ok for k in range(6))  # the other queue is unaffected
    changes = [(c.breaker, str(c.state)) for c in result.breakers]
    assert changes == [("pool:bad", "open"), ("pool:bad", "half_open"),
                       ("pool:bad", "closed")]
    # the probe ran once, after the breaker half-opened (by the run's clock, not a timing)
    assert [t for t, _ in starts(journal)].count("probe") == 1
    # (admitted at the very turn it half-opened: equal but for the datetimes' microseconds)
    probe_at = (result["probe"].started_at - result.started_at).total_seconds()
    assert probe_at >= result.breakers[1].at - 1e-3


def test_with_fail_on_open_the_queues_next_task_fails_naming_the_pool(url, tmp_path):
    pipeline = tmp_path / "pipeline.yml"
    pipeline.write_text(f"""\
tasks:
  p0: {{call: tests.helpers.fleet_tasks:kill_my_worker, queue: bad}}
  p1: {{call: tests.helpers.fleet_tasks:kill_my_worker, queue: bad, depends_on: [p0],
        trigger_rule: all_done}}
  next: {{call: tests.helpers.fleet_tasks:ran, args: ["{tmp_path / 'journal'}", next, 0],
          queue: bad, depends_on: [p1], trigger_rule: all_done}}
  other: {{call: tests.helpers.fleet_tasks:ran, args: ["{tmp_path / 'journal'}", other, 0],
           queue: good}}
""")
    with fleet(url, tmp_path):
        done = subprocess.run(
            [sys.executable, "-m", "corral", "run", str(pipeline), "--broker", url,
             "--no-store", "--keep-going", "--pool-breaker", "failures=2,on_open=fail"],
            cwd=REPO, env=worker_env(COLUMNS="400"), capture_output=True, text=True,
            timeout=GENEROUS_S,
            check=False)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "CircuitOpen: the workers of queue 'bad' failed: circuit breaker 'pool:bad' is " \
        "open after 2 infrastructure failures" in said, said
    assert "breaker open    pool:bad" in said, said  # as it happened
    assert "circuit breaker pool:bad: open" in said, said  # the run's summary
    assert [t for t, _ in starts(tmp_path / "journal")] == ["other"]  # `next` never ran
