"""The path users take: ``corral run FILE`` as a whole process, beside a floor process.

The other runners time an engine inside one warm process. A user types ``corral run
pipeline.json``: the interpreter starts, corral imports, the file is read and validated, the
run store opens, the run goes, the result prints and the process exits. A benchmark that drove
only internals once hid a 4-second file loader, so these runners time exactly that, from
``exec`` to exit, measured by the parent (``run_once`` is the whole process).

``setup`` writes the workload as a pipeline file of ``call: bench.tasks:noop`` tasks (the
workload's ids, dependencies and concurrency), untimed. Each repetition runs, in a fresh
temporary working directory (so the default store ``.corral/corral.db`` starts empty, as on a
first run):

- ``corral-cli``: ``corral run FILE --json`` with the default store (SQLite, recorded);
- ``corral-cli-nostore``: the same with ``--no-store``;
- ``floor-cli``: ``python -m bench.floor_cli FILE``, which reads the same file with ``json``,
  imports the same function and runs the floor's Kahn loop on a ``ThreadPoolExecutor``.

Two figures per repetition: the whole process (the headline, ``median_s``) and the execution
alone (``exec_s``: corral's ``duration_s`` from its ``--json`` output, i.e. from the run's start
to its end with the history committed; the floor's own loop time). ``--json`` is used because it
gives the execution time to the microsecond; it costs the JSON document of every task's record
at the end, which the whole-process time includes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._env import user_env
from bench.runners._base import BenchRunner

__all__ = ["CorralCli", "CorralCliNoStore", "FloorCli", "write_pipeline"]

ACTION = "bench.tasks:noop"


def write_pipeline(path: Path, name: str, ids: list[str], deps: list[list[str]],
                   concurrency: int) -> None:
    """The workload as a corral pipeline file (JSON) of zero-duration ``call:`` tasks."""
    tasks: dict[str, Any] = {}
    for task_id, ds in zip(ids, deps, strict=True):
        tasks[task_id] = {"call": ACTION, "depends_on": ds} if ds else {"call": ACTION}
    doc = {"name": name, "concurrency": concurrency, "tasks": tasks}
    path.write_text(json.dumps(doc, separators=(",", ":")))


class _WholeProcess(BenchRunner):
    def setup(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="corral-bench-cli-")
        self.file = Path(self._tmp.name) / f"{self.wl.name}.json"
        write_pipeline(self.file, self.wl.name, self.wl.ids, self.wl.deps, self.wl.concurrency)
        self.env = user_env()  # the defaults a new user gets, bytecode cached as installed

    def argv(self) -> list[str]:
        raise NotImplementedError

    def run_once(self) -> dict[str, float]:
        cwd = Path(tempfile.mkdtemp(prefix="run-", dir=self._tmp.name))
        try:
            t0 = time.perf_counter()
            proc = subprocess.run(self.argv(), cwd=cwd, env=self.env, capture_output=True,
                                  text=True, check=False)
            whole = time.perf_counter() - t0
        finally:
            shutil.rmtree(cwd, ignore_errors=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
            raise RuntimeError(f"{self.argv()[:4]} exited {proc.returncode}:\n{tail}")
        return {"exec_s": self.exec_seconds(proc.stdout), "whole_s": whole}

    def exec_seconds(self, stdout: str) -> float:
        return float(json.loads(stdout)["duration_s"])

    def teardown(self) -> None:
        self._tmp.cleanup()


class CorralCli(_WholeProcess):
    extra_args: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        corral = Path(sys.executable).with_name("corral")
        return [str(corral), "run", str(self.file), "--json", *self.extra_args]


class CorralCliNoStore(CorralCli):
    extra_args = ("--no-store",)


class FloorCli(_WholeProcess):
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bench.floor_cli", str(self.file)]

    def exec_seconds(self, stdout: str) -> float:
        return float(json.loads(stdout)["exec_s"])
