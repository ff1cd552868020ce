"""Large pipeline files through the real CLI: ``corral validate`` and ``corral plan`` of a
100,000-task file, JSON and YAML, each a whole process, beside the floor's whole process.

    python -m bench.pipeline_files                     # 100,000 tasks, 5 repetitions
    python -m bench.pipeline_files --tasks 10000 --reps 1
    python -m bench.pipeline_files --commands validate,plan,run   # run: corral run --no-store
    python -m bench.pipeline_files --write DIR         # only write the files, then exit

The files are a layered DAG of zero-duration ``call: bench.tasks:noop`` tasks: 100 layers,
each task depending on 1 to 4 tasks of the layer before (fixed seed; 247,680 edges at 100,000
tasks), written as a JSON object and as YAML with one flow mapping per task.

Each command runs in a fresh process (``python -m corral ...``, the repository on
``PYTHONPATH``, in a temporary directory); the report gives the median wall time (min-max),
the CPU time and the peak RSS of that process. **The floor** is the least any Python tool
has to do with the same file, as a whole process: start Python, read the file with the same
parser (``json``; libyaml's ``CSafeLoader``), and order the tasks by Kahn's algorithm, with
the cyclic garbage collector off as corral has it. Targets: validate and plan < 2 s each,
peak RSS < 1 GB. Not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._env import user_env

LAYERS = 100
TARGET_S = 2.0
TARGET_RSS_MB = 1000
COMMANDS = {
    "floor": [],
    "validate": ["validate"],
    "plan": ["plan", "--no-store"],
    "run": ["run", "--no-store"],
}


def layered(n: int, *, seed: int = 1) -> dict[str, dict[str, object]]:
    """``n`` tasks in :data:`LAYERS` layers; each depends on 1-4 tasks of the layer before."""
    rng = random.Random(seed)
    width = max(1, n // LAYERS)
    tasks: dict[str, dict[str, object]] = {}
    previous: list[str] = []
    i = 0
    while i < n:
        layer = []
        for _ in range(min(width, n - i)):
            body: dict[str, object] = {"call": "bench.tasks:noop"}
            if previous:
                body["depends_on"] = rng.sample(previous, min(len(previous), rng.randint(1, 4)))
            tasks[f"t{i}"] = body
            layer.append(f"t{i}")
            i += 1
        previous = layer
    return tasks


def write_files(n: int, folder: Path) -> dict[str, Path]:
    """The same pipeline as ``layered{n}.json`` and ``layered{n}.yaml`` in ``folder``."""
    tasks = layered(n)
    name = f"layered{n}"
    folder.mkdir(parents=True, exist_ok=True)
    as_json = folder / f"{name}.json"
    as_json.write_text(json.dumps({"name": name, "tasks": tasks}, indent=1))
    lines = [f"name: {name}", "tasks:"]
    for task_id, body in tasks.items():
        deps = body.get("depends_on")
        after = f", depends_on: [{', '.join(deps)}]" if isinstance(deps, list) else ""
        lines.append(f"  {task_id}: {{call: {body['call']}{after}}}")
    as_yaml = folder / f"{name}.yaml"
    as_yaml.write_text("\n".join(lines) + "\n")
    return {"json": as_json, "yaml": as_yaml}


def floor(path: str) -> None:
    """Read ``path`` and order its tasks by Kahn's algorithm: the least a tool must do."""
    import gc

    gc.disable()
    text = Path(path).read_text()
    if path.endswith(".json"):
        doc = json.loads(text)
    else:
        import yaml

        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    tasks = doc["tasks"]
    waiting = {t: len(b.get("depends_on", ())) for t, b in tasks.items()}
    dependents: dict[str, list[str]] = {t: [] for t in tasks}
    for t, body in tasks.items():
        for dep in body.get("depends_on", ()):
            dependents[dep].append(t)
    order = [t for t, w in waiting.items() if w == 0]
    for t in order:
        for d in dependents[t]:
            waiting[d] -= 1
            if waiting[d] == 0:
                order.append(d)
    assert len(order) == len(tasks), "the pipeline has a cycle"
    print(f"floor: {len(order)} tasks in order")


def measure(command: str, file: Path, cwd: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one whole process."""
    if command == "floor":
        argv = [sys.executable, "-m", "bench.pipeline_files", "--floor", str(file)]
    else:
        argv = [sys.executable, "-m", "corral", *COMMANDS[command], str(file)]
    env = user_env()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[2:])} exited {proc.returncode}:\n{stderr[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pipeline_files", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=100_000, help="tasks per file (default 100000)")
    p.add_argument("--reps", type=int, default=5, help="repetitions per command (default 5)")
    p.add_argument("--commands", default="validate,plan",
                   help="comma-separated: validate, plan, run (default validate,plan)")
    p.add_argument("--formats", default="json,yaml", help="comma-separated: json, yaml")
    p.add_argument("--write", metavar="DIR", help="only write the files into DIR, then exit")
    p.add_argument("--floor", metavar="FILE", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.floor:
        floor(args.floor)
        return 0
    if args.write:
        for path in write_files(args.tasks, Path(args.write)).values():
            print(path)
        return 0
    commands = ["floor", *(c.strip() for c in args.commands.split(",") if c.strip())]
    unknown = [c for c in commands if c not in COMMANDS]
    if unknown:
        raise SystemExit(f"bench: unknown command {', '.join(unknown)}; known: validate, plan, run")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    with tempfile.TemporaryDirectory(prefix="corral-bench-files-") as tmp:
        folder = Path(tmp)
        files = write_files(args.tasks, folder)
        print(f"{args.tasks:,} tasks, {args.reps} repetitions; load "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
        print("| file | command | wall s: median (min-max) | x floor | CPU s | peak RSS MB | "
              "target |")
        print("|---|---|---:|---:|---:|---:|---|")
        for fmt in formats:
            floor_median = None
            for command in commands:
                runs = [measure(command, files[fmt], folder) for _ in range(args.reps)]
                walls = [r[0] for r in runs]
                median = statistics.median(walls)
                cpu = statistics.median(r[1] for r in runs)
                rss = max(r[2] for r in runs)
                if command == "floor":
                    floor_median = median
                ratio = f"{median / floor_median:.2f}" if floor_median else "-"
                target = "" if command in ("floor", "run") else (
                    "PASS" if median < TARGET_S and rss < TARGET_RSS_MB else "FAIL")
                print(f"| {files[fmt].name} | {command} | {median:.2f} ({min(walls):.2f}-"
                      f"{max(walls):.2f}) | {ratio} | {cpu:.2f} | {rss:.0f} | {target} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
