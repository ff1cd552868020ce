"""The workloads: the synthetic DAGs and the WfCommons workflow traces in ``../shared/bench``.

Each file is a JSON list of ``{"id", "deps", "duration_s"}``; ``dags/manifest.json`` says how
to run each synthetic one (concurrency, kind, ``cpu_iters``). Workflow durations are seconds of
the original runs and are run as sleeps divided by :data:`WORKFLOW_SCALE`, at
:data:`WORKFLOW_WORKERS`. Bounds (critical path, ``max(CP, W/P)``, the simulated FIFO and
rank_u list schedules) come from the data directory's own ``bounds.py``, so the benchmark and
the data agree on what a perfect engine would do.

Kinds: ``noop`` (zero-duration: dispatch overhead), ``sleep`` (makespan against the bounds),
``cpu`` (the busy loop: process parallelism), ``api`` (building a DAG with the decorator API).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "WORKFLOW_SCALE",
    "WORKFLOW_WORKERS",
    "Workload",
    "WorkloadInfo",
    "catalogue",
    "data_dir",
    "load",
]

# Workflow traces last hours; divided by 1000 they run as sleeps of a few ms to a few s.
WORKFLOW_SCALE = 1000.0
# Workflows run at P = 8, as bounds.py's columns are compared at that width.
WORKFLOW_WORKERS = 8
# Synthetic workloads that --quick leaves out (the slowest), unless named with --workloads.
_SLOW_SYNTHETIC = {"w5_cpu16", "w6_wide100k"}
# A workflow whose lower bound is above this many seconds (scaled) is "slow" for --quick.
_QUICK_WORKFLOW_LB_S = 1.5


def data_dir(explicit: str | None = None) -> Path:
    """``--data``, else ``../shared/bench`` next to the repository, else ``$CORRAL_BENCH_DATA``."""
    if explicit:
        return Path(explicit).resolve()
    beside = Path(__file__).resolve().parents[1].parent / "shared" / "bench"
    if (beside / "dags" / "manifest.json").exists():
        return beside
    env = os.environ.get("CORRAL_BENCH_DATA")
    if env:
        return Path(env).resolve()
    raise SystemExit(
        f"bench: no workload data at {beside}; set CORRAL_BENCH_DATA or pass --data DIR "
        "(a directory holding dags/manifest.json and workflows/)"
    )


@cache
def bounds_module(data: Path) -> ModuleType:
    """The data directory's ``bounds.py``, imported from its file."""
    spec = importlib.util.spec_from_file_location("_corral_bench_bounds", data / "bounds.py")
    if spec is None or spec.loader is None:  # pragma: no cover - missing file
        raise SystemExit(f"bench: cannot import {data / 'bounds.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class WorkloadInfo:
    """What the parent process knows of a workload without loading its tasks."""

    name: str
    kind: str  # noop | sleep | cpu | api
    file: Path
    n_tasks: int
    concurrency: int
    scale: float = 1.0  # durations in the file are divided by this
    slow: bool = False  # left out by --quick
    cpu_iters: int = 0
    # Seconds (scaled): lb, cp, work, fifo, rank (simulated list schedules); sleep kinds only.
    bounds: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Workload:
    """A workload's tasks, in file order (which is a topological order for every file here)."""

    info: WorkloadInfo
    ids: list[str]
    deps: list[list[str]]
    durations: list[float]  # seconds, already scaled

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def concurrency(self) -> int:
        return self.info.concurrency

    def sinks(self) -> list[str]:
        """Tasks nothing depends on: asking an engine for these runs everything."""
        used = {d for ds in self.deps for d in ds}
        return [t for t in self.ids if t not in used]

    def topological(self) -> list[int]:
        """Indices in a dependency-respecting order (file order if it already is one)."""
        seen: set[str] = set()
        for i, ds in enumerate(self.deps):
            if any(d not in seen for d in ds):
                break
            seen.add(self.ids[i])
        else:
            return list(range(len(self.ids)))
        index = {t: i for i, t in enumerate(self.ids)}
        waiting = [len(ds) for ds in self.deps]
        dependents: list[list[int]] = [[] for _ in self.ids]
        for i, ds in enumerate(self.deps):
            for d in ds:
                dependents[index[d]].append(i)
        order = [i for i, w in enumerate(waiting) if w == 0]
        for i in order:
            for j in dependents[i]:
                waiting[j] -= 1
                if waiting[j] == 0:
                    order.append(j)
        return order


def _bounds(data: Path, file: Path, workers: int, scale: float) -> dict[str, float]:
    result = bounds_module(data).analyse(str(file), [workers])
    per_p = result["P"][workers]
    return {
        "lb": per_p["lb_s"] / scale,
        "lb_window": per_p["lb_window_s"] / scale,
        "cp": result["cp_s"] / scale,
        "work": result["work_s"] / scale,
        "fifo": per_p["fifo_s"] / scale,
        "rank": per_p["rank_s"] / scale,
    }


@cache
def catalogue(data: Path) -> dict[str, WorkloadInfo]:
    """Every workload, by name, in the order the report lists them."""
    manifest: dict[str, dict[str, Any]] = json.loads((data / "dags" / "manifest.json").read_text())
    out: dict[str, WorkloadInfo] = {}
    for name, meta in manifest.items():
        file = data / "dags" / meta["file"]
        kind = meta["kind"]
        bounds = _bounds(data, file, meta["concurrency"], 1.0) if kind == "sleep" else {}
        out[name] = WorkloadInfo(
            name=name,
            kind=kind,
            file=file,
            n_tasks=meta["n_tasks"],
            concurrency=meta["concurrency"],
            slow=name in _SLOW_SYNTHETIC,
            cpu_iters=int(meta.get("cpu_iters", 0)),
            bounds=bounds,
            note=meta.get("note", ""),
        )
    if "w3_layered10k" in out:
        base = out["w3_layered10k"]
        out["api10k"] = WorkloadInfo(
            name="api10k",
            kind="api",
            file=base.file,
            n_tasks=base.n_tasks,
            concurrency=base.concurrency,
            note="build w3_layered10k with @dag.task (no run)",
        )
    for file in sorted((data / "workflows").glob("*.json")):
        name = "wf_" + file.stem.split("-")[0]
        bounds = _bounds(data, file, WORKFLOW_WORKERS, WORKFLOW_SCALE)
        n_tasks = len(json.loads(file.read_text()))
        out[name] = WorkloadInfo(
            name=name,
            kind="sleep",
            file=file,
            n_tasks=n_tasks,
            concurrency=WORKFLOW_WORKERS,
            scale=WORKFLOW_SCALE,
            slow=bounds["lb"] > _QUICK_WORKFLOW_LB_S,
            bounds=bounds,
            note=f"{file.stem} (WfCommons), durations / {WORKFLOW_SCALE:g}",
        )
    return out


def load(info: WorkloadInfo) -> Workload:
    """Read a workload's tasks."""
    raw: list[dict[str, Any]] = json.loads(info.file.read_text())
    return Workload(
        info=info,
        ids=[t["id"] for t in raw],
        deps=[list(t.get("deps", ())) for t in raw],
        durations=[float(t.get("duration_s", 0.0)) / info.scale for t in raw],
    )
