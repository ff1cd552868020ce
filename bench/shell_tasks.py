"""What a shell task costs: corral against a floor, in-process, under ``corral run`` and under
``corral serve``, with and without a large heap, on asyncio and uvloop.

::

    python -m bench.shell_tasks                       # 20,000 `true` tasks at concurrency 8
    python -m bench.shell_tasks --tasks 2000 --reps 1 # a smoke run
    python -m bench.shell_tasks --modes floor,corral --heap-mb 0,300 --loops asyncio,uvloop

Modes (each repetition runs every mode once, alternating, each in a fresh subprocess):

- ``floor``: a ``ThreadPoolExecutor`` as wide as the concurrency, each task one
  ``subprocess.run(["/bin/sh", "-c", CMD], start_new_session=True)`` with stdout and stderr
  appended to a log file of its own — what corral does for a shell task, and nothing else.
- ``corral``: ``Runner(...).run()`` in-process on a flat DAG of the same commands, logs per
  attempt, no store; once per ``--loops`` x ``--heap-mb`` (the heap: that many MB of live
  Python objects allocated first, as a long-running server accumulates them).
- ``cli``: ``corral run FILE`` on the same pipeline, recorded in a fresh SQLite store.
- ``server``: the same pipeline submitted to a ``corral serve`` started for the purpose
  (uvicorn with uvloop when installed), timed from the POST to the run's end.

Reported per mode: the median wall time per task and its ratio to the floor's median, and the
CPU per task of the process itself and of its children (for corral: the reaper and the
commands). Wall-clock figures need a quiet machine; the CPU split says where the time goes.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._env import user_env


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def pipeline_text(n: int, concurrency: int, cmd: str) -> str:
    lines = [f"name: shell{n}", f"concurrency: {concurrency}", "tasks:"]
    lines += [f"  t{i}: {{cmd: {json.dumps(cmd)}}}" for i in range(n)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- one measurement (child)
def run_floor(n: int, concurrency: int, cmd: str, folder: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    logs = folder / "floor-logs"
    logs.mkdir()

    def one(i: int) -> None:
        with open(logs / f"t{i}.log", "ab") as log:
            subprocess.run(["/bin/sh", "-c", cmd], stdin=subprocess.DEVNULL, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True, check=True)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))


def run_corral(n: int, concurrency: int, cmd: str, folder: Path, loop: str) -> None:
    import asyncio

    from corral import DAG
    from corral._runner import Runner

    dag = DAG(f"shell{n}")
    for i in range(n):
        dag.shell(f"t{i}", cmd)
    graph = dag.validate()

    async def go() -> None:
        result = await Runner(graph, concurrency=concurrency, log_dir=folder / "logs").run()
        assert result.ok, result.status

    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(go())
    else:
        asyncio.run(go())


def run_cli(n: int, concurrency: int, cmd: str, folder: Path) -> None:
    (folder / "p.yaml").write_text(pipeline_text(n, concurrency, cmd))
    subprocess.run([sys.executable, "-m", "corral", "run", "p.yaml", "--json"], cwd=folder,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=user_env())


def run_server(n: int, concurrency: int, cmd: str, folder: Path) -> float:
    """Returns the seconds from the POST to the run's end (the server's start is not timed)."""
    import httpx

    from bench.load_server import own_server

    with own_server() as (url, token):
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            t0 = time.perf_counter()
            response = http.post("/api/v1/runs",
                                 json={"pipeline": pipeline_text(n, concurrency, cmd)})
            response.raise_for_status()
            run_id = response.json()["run_id"]
            while True:
                time.sleep(0.05)
                got = http.get(f"/api/v1/runs/{run_id}").json()
                if not got["live"]:
                    break
            elapsed = time.perf_counter() - t0
            if got["status"] != "succeeded":
                raise SystemExit(f"the server's run ended {got['status']}")
    return elapsed


def child(mode: str, n: int, concurrency: int, cmd: str, loop: str, heap_mb: int) -> None:
    ballast = [bytes(1024) + bytes([i % 256]) for i in range(heap_mb * 1024)]  # noqa: F841
    with tempfile.TemporaryDirectory(prefix="corral-shell-bench-") as tmp:
        folder = Path(tmp)
        cpu0 = _cpu()
        t0 = time.perf_counter()
        elapsed = None
        if mode == "floor":
            run_floor(n, concurrency, cmd, folder)
        elif mode == "corral":
            run_corral(n, concurrency, cmd, folder, loop)
        elif mode == "cli":
            run_cli(n, concurrency, cmd, folder)
        elif mode == "server":
            elapsed = run_server(n, concurrency, cmd, folder)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
        wall = elapsed if elapsed is not None else time.perf_counter() - t0
        cpu1 = _cpu()
    print(json.dumps({"wall_s": wall, "self_cpu_s": cpu1[0] - cpu0[0],
                      "children_cpu_s": cpu1[1] - cpu0[1]}))


# ---------------------------------------------------------------------- the driver
def variants(modes: list[str], loops: list[str], heaps: list[int]) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    for mode in modes:
        if mode == "corral":
            out += [(mode, loop, heap) for loop in loops for heap in heaps]
        else:
            out.append((mode, "asyncio", 0))
    return out


def label(mode: str, loop: str, heap: int) -> str:
    if mode != "corral":
        return mode
    return f"corral/{loop}" + (f"+{heap}MB" if heap else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shell_tasks",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cmd", default="true", help="the command of every task")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--modes", default="floor,corral,cli,server")
    parser.add_argument("--loops", default="asyncio,uvloop", help="for the corral mode")
    parser.add_argument("--heap-mb", default="0,300", help="for the corral mode")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "LOOP", "HEAP_MB"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, loop, heap = args.child
        child(mode, args.tasks, args.concurrency, args.cmd, loop, int(heap))
        return 0

    loops = [x for x in args.loops.split(",") if x]
    if "uvloop" in loops:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            print("uvloop is not installed: measuring asyncio only", file=sys.stderr)
            loops.remove("uvloop")
    todo = variants(args.modes.split(","), loops, [int(x) for x in args.heap_mb.split(",")])
    samples: dict[str, list[dict[str, float]]] = {label(*v): [] for v in todo}
    for rep in range(args.reps):
        for mode, loop, heap in todo:  # alternating: every mode once per repetition
            out = subprocess.run(
                [sys.executable, "-m", "bench.shell_tasks", "--tasks", str(args.tasks),
                 "--concurrency", str(args.concurrency), "--cmd", args.cmd,
                 "--child", mode, loop, str(heap)],
                check=True, capture_output=True, text=True)
            sample = json.loads(out.stdout.strip().splitlines()[-1])
            samples[label(mode, loop, heap)].append(sample)
            print(f"rep {rep + 1}: {label(mode, loop, heap):<22} {sample['wall_s']:8.2f} s",
                  file=sys.stderr)
    n = args.tasks
    result: dict[str, Any] = {"tasks": n, "concurrency": args.concurrency, "cmd": args.cmd,
                              "reps": args.reps, "modes": {}}
    floor = statistics.median(s["wall_s"] for s in samples.get("floor", [])) \
        if samples.get("floor") else None
    for name, runs in samples.items():
        wall = statistics.median(s["wall_s"] for s in runs)
        result["modes"][name] = {
            "wall_ms_per_task": 1000 * wall / n,
            "min_max_s": [min(s["wall_s"] for s in runs), max(s["wall_s"] for s in runs)],
            "x_floor": wall / floor if floor else None,
            "self_cpu_ms_per_task": 1000 * statistics.median(s["self_cpu_s"] for s in runs) / n,
            "children_cpu_ms_per_task":
                1000 * statistics.median(s["children_cpu_s"] for s in runs) / n,
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{n} x `{args.cmd}` at concurrency {args.concurrency}, {args.reps} repetitions "
          "(medians)")
    print(f"{'mode':<22} {'ms/task':>8} {'x floor':>8} {'own CPU':>8} {'children':>8}  min-max s")
    for name, m in result["modes"].items():
        ratio = f"{m['x_floor']:.2f}" if m["x_floor"] else "-"
        print(f"{name:<22} {m['wall_ms_per_task']:>8.3f} {ratio:>8} "
              f"{m['self_cpu_ms_per_task']:>8.3f} {m['children_cpu_ms_per_task']:>8.3f}  "
              f"{m['min_max_s'][0]:.2f}-{m['min_max_s'][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
