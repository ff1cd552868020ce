"""``python -m bench``: every selected runner on every selected workload, side by side.

Each (runner, workload) pair runs in a fresh ``python -m bench.child`` process, so peak RSS is
that runner's own and no engine's imports, threads or caches leak into the next measurement.
Results go to ``bench/results/<date>.md`` (the printed table) and ``<date>.json`` (every
repetition), or under ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.report import figures, markdown
from bench.runners import RUNNERS
from bench.workloads import catalogue, data_dir

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REPS = 5
QUICK_REPS = 2


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark corral against a Kahn's-algorithm floor and its peers.",
        epilog="Workload data: --data, else ../shared/bench beside the repository, else "
        "$CORRAL_BENCH_DATA. Install the extras with: pip install -e .[bench]",
    )
    p.add_argument("--workloads", type=_csv, help="comma-separated workload names (--list)")
    p.add_argument("--runners", type=_csv, help="comma-separated runner names (--list)")
    p.add_argument(
        "--reps",
        type=int,
        help=f"repetitions per pair (default {DEFAULT_REPS}, {QUICK_REPS} with --quick)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: fewer repetitions, slowest workloads left out",
    )
    p.add_argument(
        "--profile",
        metavar="RUNNER:WORKLOAD",
        help="run one repetition under pyinstrument, print the profile and exit",
    )
    p.add_argument("--data", help="directory holding dags/ and workflows/")
    p.add_argument("--out", help="directory for the report (default bench/results)")
    p.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds allowed to one runner on one workload (default 3600)",
    )
    p.add_argument(
        "--no-caps",
        action="store_true",
        help="run slow peers on workloads above their task cap too",
    )
    p.add_argument("--list", action="store_true", help="list workloads and runners, then exit")
    return p


def _check_names(kind: str, given: list[str], known: list[str]) -> None:
    unknown = [g for g in given if g not in known]
    if unknown:
        raise SystemExit(f"bench: unknown {kind} {', '.join(unknown)}; known: {', '.join(known)}")


def _child(
    runner: str, workload: str, reps: int, data: Path, timeout: float, profile: bool = False
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        out = Path(tmp) / "record.json"
        cmd = [
            sys.executable,
            "-m",
            "bench.child",
            "--runner",
            runner,
            "--workload",
            workload,
            "--reps",
            str(reps),
            "--data",
            str(data),
            "--out",
            str(out),
        ]
        if profile:
            cmd.append("--profile")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        try:
            proc = subprocess.run(
                cmd,
                check=False,
                cwd=REPO,
                env=env,
                timeout=timeout,
                capture_output=not profile,
                text=True,
            )
        except subprocess.TimeoutExpired:
            return {
                "runner": runner,
                "workload": workload,
                "error": f"timed out after {timeout:g} s",
            }
        if out.exists():
            record: dict[str, Any] = json.loads(out.read_text())
            return record
        tail = (proc.stderr or "").strip().splitlines()[-15:]
        return {
            "runner": runner,
            "workload": workload,
            "error": f"child exited {proc.returncode}:\n" + "\n".join(tail),
        }


def _versions() -> str:
    out = [f"Python {platform.python_version()}"]
    for dist in ("corral", "dask", "distributed", "ray", "prefect"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            check=False,
            cwd=REPO,
            text=True,
            capture_output=True,
        ).stdout.strip()
        out.append(f"git {rev}{' + uncommitted changes in src/' if dirty else ''}")
    except (OSError, subprocess.CalledProcessError):
        pass
    return ", ".join(out)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _report_path(out_dir: Path, date: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{date}.md"
    n = 2
    while path.exists():
        path = out_dir / f"{date}-{n}.md"
        n += 1
    return path


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    data = data_dir(args.data)
    infos = catalogue(data)
    if args.list:
        print("workloads:")
        for name, info in infos.items():
            tag = " (left out by --quick)" if info.slow else ""
            print(
                f"  {name:18} {info.kind:5} {info.n_tasks:>7} tasks  P={info.concurrency}"
                f"{tag}  {info.note}"
            )
        print("runners:")
        for name, entry in RUNNERS.items():
            why = entry.unavailable()
            print(f"  {name:18} {entry.description}" + (f"  [skipped: {why}]" if why else ""))
        return 0

    if args.profile:
        runner, _, workload = args.profile.partition(":")
        _check_names("runner", [runner], list(RUNNERS))
        _check_names("workload", [workload], list(infos))
        why = RUNNERS[runner].unavailable()
        if why:
            raise SystemExit(f"bench: {runner}: {why}")
        record = _child(runner, workload, 1, data, args.timeout, profile=True)
        if "error" in record:
            print(record["error"], file=sys.stderr)
            return 1
        if "skipped" in record:
            print(f"skipped: {record['skipped']}", file=sys.stderr)
        return 0

    workloads = args.workloads or [n for n, i in infos.items() if not (args.quick and i.slow)]
    runners = args.runners or list(RUNNERS)
    _check_names("workload", workloads, list(infos))
    _check_names("runner", runners, list(RUNNERS))
    reps = args.reps or (QUICK_REPS if args.quick else DEFAULT_REPS)
    started = dt.datetime.now()
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    load_start = _load()

    records: list[dict[str, Any]] = []
    unavailable = {n: RUNNERS[n].unavailable() for n in runners}
    for name, why in unavailable.items():
        if why:
            records.append({"runner": name, "workload": "(all)", "skipped": why})
            print(f"skip  {name}: {why}", file=sys.stderr)
    for workload in workloads:
        info = infos[workload]
        for name in runners:
            if unavailable[name]:
                continue
            why = RUNNERS[name].unsupported(info.kind, info.n_tasks, caps=not args.no_caps)
            if why:
                # A kind the runner does not run is by design; a cap is worth a line.
                records.append(
                    {
                        "runner": name,
                        "workload": workload,
                        "skipped": why,
                        "by_design": info.kind not in RUNNERS[name].kinds,
                    }
                )
                continue
            record = _child(name, workload, reps, data, args.timeout)
            records.append(record)
            if "error" in record:
                status = "ERROR " + record["error"].strip().splitlines()[-1]
            elif "skipped" in record:
                status = "skipped: " + record["skipped"]
            else:
                times = sorted(record["times"])
                status = f"median {times[len(times) // 2]:.4f} s over {len(times)}"
            print(f"{workload:16} {name:16} {status}", file=sys.stderr)

    infos = {name: infos[name] for name in workloads}  # targets for what this run measured
    results = figures(records, infos)
    meta = {
        "date": started.strftime("%Y-%m-%d %H:%M"),
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "load_start": load_start,
        "load_end": _load(),
        "versions": _versions(),
        "reps": reps,
        "data": str(data),
    }
    text = markdown(results, infos, meta)
    print(text)
    out_dir = Path(args.out) if args.out else REPO / "bench" / "results"
    md = _report_path(out_dir, started.strftime("%Y-%m-%d"))
    md.write_text(text + "\n")
    md.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"\nwritten: {md} and {md.with_suffix('.json').name}", file=sys.stderr)
    return 0
