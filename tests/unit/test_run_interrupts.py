"""A signal at any moment of a run, in-process: the run ends ``interrupted`` and no process it
started is left. Signals come from a timer thread at a spread of delays, so that they land
while commands are being started, run, and are being stopped, on a machine kept busy by two
spinning processes. Timeouts are hang guards only."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from tests.helpers.processes import MARKER_VAR, busy_machine, marked_processes, new_marker
from tests.helpers.waiting import wait_for

from corral import DAG, RunStatus

pytestmark = pytest.mark.slow

DELAYS = [i * 0.01 for i in range(25)] + [0.3, 0.4, 0.6]


class SignalAfterStart:
    """A listener that has ``sig`` sent to this process ``delay`` seconds after the run
    starts being recorded (the handlers are in place from then on)."""

    def __init__(self, sig: int, delay: float) -> None:
        self.timer = threading.Timer(delay, os.kill, (os.getpid(), sig))

    def run_started(self, run):
        self.timer.start()

    def transitions(self, batch):
        pass

    def run_finished(self, result):
        pass


@pytest.mark.parametrize("executor", ["shell", "process"])
def test_a_signal_at_any_moment_leaves_no_process_behind(tmp_path, monkeypatch, executor):
    with busy_machine(2):
        for k, delay in enumerate(DELAYS):
            marker = new_marker()
            monkeypatch.setenv(MARKER_VAR, marker)  # inherited by everything the run starts
            dag = DAG(f"interrupted-{k}")
            for i in range(8):
                if executor == "shell":
                    dag.shell(f"t{i}", "sleep 60 & wait")
                else:
                    dag.add(_sleep_with_a_child, id=f"t{i}", options={"executor": "process"})
            sig = signal.SIGTERM if k % 2 else signal.SIGINT
            signaller = SignalAfterStart(sig, delay)
            try:
                result = dag.run(concurrency=4, log_dir=tmp_path / "logs", handle_signals=True,
                                 listeners=[signaller])
            finally:
                signaller.timer.cancel()
                signaller.timer.join()
            assert result.status is RunStatus.INTERRUPTED, (delay, result.status)
            assert result.signal == sig
            # Every command's group was SIGKILLed before the run returned (the shell executor
            # waits for that); on a busy machine the kernel may take a moment to finish a
            # background child off, so this polls. One never killed would outlive the guard:
            # it sleeps 60 s.
            wait_for(lambda: marked_processes(marker) == [],
                     f"no process left after a signal at {delay}s", timeout=10)


def _sleep_with_a_child():
    import subprocess
    import time

    # A task's own subprocess: it must not outlive the run either.
    subprocess.Popen(["sleep", "60"])
    time.sleep(60)


class Finished:
    def __init__(self):
        self.result = None

    def run_started(self, run):
        pass

    def transitions(self, batch):
        pass

    def run_finished(self, result):
        self.result = result


def test_a_run_cancelled_from_outside_ends_interrupted_and_its_commands_too(
    tmp_path, monkeypatch
):
    import asyncio

    marker = new_marker()
    monkeypatch.setenv(MARKER_VAR, marker)
    dag = DAG("cancelled")
    for i in range(3):
        dag.shell(f"t{i}", f"echo started >> {tmp_path / 'started'}; sleep 60 & wait")
    finished = Finished()

    async def main():
        task = asyncio.ensure_future(dag.run_async(listeners=[finished], log_dir=tmp_path))
        while not (tmp_path / "started").exists():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 60))  # a hang guard
    # The listeners (the store) heard the end: the run is recorded interrupted, not left running.
    assert finished.result is not None
    assert finished.result.status is RunStatus.INTERRUPTED
    assert marked_processes(marker) == []
