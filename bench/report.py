# ruff: noqa: RUF001 - the report is typeset (multiplication sign, en dash)
"""From child records to figures, target verdicts and the markdown report.

Headline column: each runner's median over the floor's median on the same workload, measured
in the same invocation (``floor-thread``; ``floor-process`` for the CPU workload). Per kind:
µs per task (noop), makespan over the lower bound and over bounds.py's simulated rank_u and
FIFO list schedules (sleep), speed-up over ``serial`` (cpu), build time (api).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from bench.runners import WHOLE_PROCESS
from bench.workloads import WorkloadInfo

__all__ = ["figures", "markdown", "targets"]

Record = dict[str, Any]

REFERENCE = {"noop": "floor-thread", "sleep": "floor-thread", "cpu": "floor-process"}


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def figures(records: list[Record], infos: dict[str, WorkloadInfo]) -> list[Record]:
    """Each record with its summary figures added (``median_s``, ``vs_floor``, ...)."""
    by_key = {(r["workload"], r["runner"]): r for r in records}
    out = []
    for r in records:
        r = dict(r)
        times = r.get("times") or []
        if not times or "error" in r:
            out.append(r)
            continue
        info = infos[r["workload"]]
        med = statistics.median(times)
        r.update(median_s=med, min_s=min(times), max_s=max(times))
        r["extra_median"] = {k: _median(v) for k, v in r.get("extra", {}).items()}
        whole = r["runner"] in WHOLE_PROCESS
        reference = "floor-cli" if whole else REFERENCE.get(info.kind, "")
        ref = by_key.get((r["workload"], reference))
        if ref and ref.get("times") and "error" not in ref:
            r["vs_floor"] = med / statistics.median(ref["times"])
            if whole and ref.get("extra", {}).get("exec_s") and r["extra"].get("exec_s"):
                r["exec_vs_floor"] = (statistics.median(r["extra"]["exec_s"])
                                      / statistics.median(ref["extra"]["exec_s"]))
        if info.kind == "noop":
            r["us_per_task"] = med / info.n_tasks * 1e6
        elif info.kind == "sleep":
            for key in ("lb", "rank", "fifo"):
                r[f"over_{key}"] = med / info.bounds[key]
        elif info.kind == "cpu":
            serial = by_key.get((r["workload"], "serial"))
            if serial and serial.get("times") and "error" not in serial:
                r["speedup"] = statistics.median(serial["times"]) / med
                r["speedup_basis"] = "serial, measured"
            else:
                r["speedup"] = info.n_tasks * 0.25 / med
                r["speedup_basis"] = "nominal 0.25 s per task (serial not run)"
        out.append(r)
    return out


def _get(results: list[Record], workload: str, runner: str) -> Record | None:
    for r in results:
        if r["workload"] == workload and r["runner"] == runner and "median_s" in r:
            return r
    return None


def targets(results: list[Record], infos: dict[str, WorkloadInfo]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows; "n/a" when the run did not measure it."""
    rows: list[tuple[str, str, str]] = []

    def check(name: str, measured: Callable[[], tuple[str, bool] | None]) -> None:
        try:
            got = measured()
        except (KeyError, TypeError, ZeroDivisionError):
            got = None
        if got is None:
            rows.append((name, "—", "n/a (not measured)"))
        else:
            rows.append((name, got[0], "PASS" if got[1] else "FAIL"))

    def per_task_vs_floor(runner: str, limit: float) -> tuple[str, bool] | None:
        r = _get(results, "w3_layered10k", runner)
        f = _get(results, "w3_layered10k", "floor-thread")
        if r is None or f is None:
            return None
        ratio = r["us_per_task"] / f["us_per_task"]
        return (
            f"{r['us_per_task']:.1f} µs vs {f['us_per_task']:.1f} µs = {ratio:.2f}×",
            ratio <= limit,
        )

    check(
        "layered 10k, zero-duration: corral ≤ 1.5× floor-thread per task",
        lambda: per_task_vs_floor("corral", 1.5),
    )
    check(
        "layered 10k, zero-duration: corral-sqlite ≤ 2× floor-thread per task",
        lambda: per_task_vs_floor("corral-sqlite", 2.0),
    )
    for name, info in infos.items():
        if info.kind != "noop":
            continue

        def vs_dask(name: str = name) -> tuple[str, bool] | None:
            c, d = _get(results, name, "corral"), _get(results, name, "dask-threaded")
            if c is None or d is None:
                return None
            speed = d["median_s"] / c["median_s"]
            return f"{speed:.1f}× faster", speed >= 3

        check(f"{name}: corral ≥ 3× faster than dask-threaded", vs_dask)

    def cli(workload: str, runner: str, what: str, limit: float) -> tuple[str, bool] | None:
        r = _get(results, workload, runner)
        if r is None:
            return None
        if what == "exec":
            ratio = r["exec_vs_floor"]
            return f"{ratio:.2f}× floor-cli's execution", ratio <= limit
        if what == "whole":
            ratio = r["vs_floor"]
            return f"{r['median_s']:.2f} s, {ratio:.2f}× floor-cli's whole process", ratio <= limit
        return f"{r['median_s']:.2f} s", r["median_s"] < limit

    check("layered 10k: `corral run FILE` (default store) execution ≤ 1.5× the floor's",
          lambda: cli("w3_layered10k", "corral-cli", "exec", 1.5))
    check("wide 100k: `corral run FILE --no-store` whole process < 10 s",
          lambda: cli("w6_wide100k", "corral-cli-nostore", "wall", 10.0))
    check("wide 100k: `corral run FILE --no-store` whole process ≤ 3× the floor's",
          lambda: cli("w6_wide100k", "corral-cli-nostore", "whole", 3.0))

    def wide(what: str) -> tuple[str, bool] | None:
        r = _get(results, "w6_wide100k", "corral")
        if r is None:
            return None
        if what == "plan":
            v = r["extra_median"]["validate_plan_s"]
            return f"{v:.2f} s", v < 2
        if what == "run":
            return f"{r['median_s']:.2f} s", r["median_s"] < 10
        return f"{r['rss_peak_mb']:.0f} MiB", r["rss_peak_mb"] < 1024

    check("wide 100k: corral validate+plan < 2 s", lambda: wide("plan"))
    check("wide 100k: corral full run < 10 s", lambda: wide("run"))
    check("wide 100k: corral peak RSS < 1 GB", lambda: wide("rss"))

    def cpu() -> tuple[str, bool] | None:
        r = _get(results, "w5_cpu16", "corral")
        if r is None:
            return None
        return f"{r['speedup']:.2f}× ({r['speedup_basis']})", r["speedup"] >= 1.8

    check("CPU 16 × 0.25 s on processes: corral ≥ 1.8× speed-up over serial", cpu)
    for name, info in infos.items():
        if info.kind != "sleep":
            continue

        def sleep(name: str = name, runner: str = "corral") -> tuple[str, bool] | None:
            r = _get(results, name, runner)
            if r is None:
                return None
            ok = r["over_rank"] <= 1.05 and r["over_fifo"] <= 1.0
            return f"{r['over_rank']:.3f}× rank_u, {r['over_fifo']:.3f}× FIFO", ok

        check(f"{name}: corral makespan ≤ 1.05× rank_u sim and ≤ FIFO sim", sleep)
        # A first run: no estimates, no history (issue 17).
        check(f"{name}: corral-noest (first run) makespan ≤ 1.05× rank_u sim and ≤ FIFO sim",
              lambda name=name: sleep(name, "corral-noest"))

        def over_fifo_run(name: str = name) -> tuple[str, bool] | None:
            first, fifo = _get(results, name, "corral-noest"), _get(results, name, "corral-fifo")
            if first is None or fifo is None:
                return None
            ratio = first["median_s"] / fifo["median_s"]
            shown = f"{ratio:.3f}× ({first['median_s']:.3f} / {fifo['median_s']:.3f} s)"
            return shown, ratio <= 1.0

        # The same comparison as the one above with the overhead on both sides: the FIFO
        # schedule as corral runs it, not as a zero-overhead simulation plays it.
        check(f"{name}: corral-noest (first run) makespan ≤ corral-fifo's (FIFO, run)",
              over_fifo_run)

    def api() -> tuple[str, bool] | None:
        r = _get(results, "api10k", "corral")
        if r is None:
            return None
        return f"{r['median_s']:.3f} s", r["median_s"] < 0.5

    check("decorator API: build 10k tasks < 0.5 s", api)
    return rows


def _s(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _x(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×"


def _table(header: list[str], rows: list[list[str]], text_columns: int = 2) -> list[str]:
    right = ["---" if i < text_columns else "---:" for i in range(len(header))]
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(right) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _times(r: Record) -> list[str]:
    return [_s(r["median_s"]), f"{_s(r['min_s'])}–{_s(r['max_s'])}", str(len(r["times"]))]


def markdown(results: list[Record], infos: dict[str, WorkloadInfo], meta: dict[str, Any]) -> str:
    lines = [f"# corral benchmark, {meta['date']}", ""]
    lines += [
        f"- command: `{meta['command']}`",
        f"- machine: {meta['machine']}; load average {meta['load_start']} at start, "
        f"{meta['load_end']} at end",
        f"- versions: {meta['versions']}",
        "- times in seconds, median of the repetitions (`reps`) with min–max; "
        "**× floor** = median / the floor's median on the same workload in this run "
        "(floor-thread; floor-process for CPU); peak RSS is the runner's own process",
        "",
    ]
    ok = [r for r in results if "median_s" in r]
    by_kind: dict[str, list[Record]] = {}
    for r in ok:
        kind = "whole" if r["runner"] in WHOLE_PROCESS else infos[r["workload"]].kind
        by_kind.setdefault(kind, []).append(r)

    if by_kind.get("noop"):
        lines += ["## Zero-duration workloads: per-task overhead", ""]
        lines += _table(
            [
                "workload",
                "runner",
                "median s",
                "min–max",
                "reps",
                "µs/task",
                "× floor",
                "peak RSS MiB",
                "validate+plan s",
            ],
            [
                [
                    r["workload"],
                    r["runner"],
                    *_times(r),
                    f"{r['us_per_task']:.1f}",
                    f"**{_x(r.get('vs_floor'))}**",
                    f"{r['rss_peak_mb']:.0f}",
                    _s(r.get("extra_median", {}).get("validate_plan_s")),
                ]
                for r in by_kind["noop"]
            ],
        )
        lines.append("")
    if by_kind.get("whole"):
        lines += [
            "## The path users take: `corral run FILE` as a whole process",
            "",
            "Whole process = from exec to exit (interpreter start, imports, reading and "
            "validating the file, the store, the run, the output); execution = corral's "
            "`duration_s` (run start to end, history committed) and the floor's own loop. "
            "× floor-cli: the same figure of `python -m bench.floor_cli FILE` in this run.",
            "",
        ]
        lines += _table(
            [
                "workload",
                "runner",
                "whole s",
                "min–max",
                "reps",
                "× floor-cli",
                "execution s",
                "execution × floor-cli",
                "peak RSS MiB (children)",
            ],
            [
                [
                    r["workload"],
                    r["runner"],
                    *_times(r),
                    f"**{_x(r.get('vs_floor'))}**",
                    _s(r["extra_median"].get("exec_s")),
                    f"**{_x(r.get('exec_vs_floor'))}**",
                    f"{r.get('rss_children_peak_mb', 0):.0f}",
                ]
                for r in by_kind["whole"]
            ],
        )
        lines.append("")
    if by_kind.get("sleep"):
        lines += [
            "## Sleep workloads: makespan at concurrency 8",
            "",
            "Bounds from `bounds.py` (workflows scaled ÷ 1000): LB = max(CP, W/P); "
            "rank_u and FIFO = simulated zero-overhead list schedules.",
            "",
        ]
        rows = []
        for r in by_kind["sleep"]:
            b = infos[r["workload"]].bounds
            rows.append(
                [
                    r["workload"],
                    r["runner"],
                    *_times(r),
                    f"**{_x(r.get('vs_floor'))}**",
                    f"{_s(b['lb'])} / {_s(b['rank'])} / {_s(b['fifo'])}",
                    _x(r["over_lb"]),
                    _x(r["over_rank"]),
                    _x(r["over_fifo"]),
                    f"{r['rss_peak_mb']:.0f}",
                ]
            )
        lines += _table(
            [
                "workload",
                "runner",
                "makespan s",
                "min–max",
                "reps",
                "× floor",
                "LB / rank_u / FIFO s",
                "/ LB",
                "/ rank_u",
                "/ FIFO",
                "peak RSS MiB",
            ],
            rows,
        )
        lines.append("")
    if by_kind.get("cpu"):
        lines += ["## CPU-bound workload: process parallelism", ""]
        lines += _table(
            [
                "workload",
                "runner",
                "median s",
                "min–max",
                "reps",
                "speed-up over serial",
                "× floor",
                "peak RSS MiB (self / children)",
            ],
            [
                [
                    r["workload"],
                    r["runner"],
                    *_times(r),
                    _x(r.get("speedup")),
                    f"**{_x(r.get('vs_floor'))}**",
                    f"{r['rss_peak_mb']:.0f} / {r.get('rss_children_peak_mb', 0):.0f}",
                ]
                for r in by_kind["cpu"]
            ],
        )
        lines.append("")
    if by_kind.get("api"):
        lines += ["## Python API overhead", ""]
        lines += _table(
            [
                "workload",
                "runner",
                "build s (generated ids)",
                "min–max",
                "reps",
                "build s (.options(id=...))",
                "validate s",
            ],
            [
                [
                    r["workload"],
                    r["runner"],
                    *_times(r),
                    _s(r["extra_median"].get("api_build_named_s")),
                    _s(r["extra_median"].get("api_validate_s")),
                ]
                for r in by_kind["api"]
            ],
        )
        lines.append("")
    lines += ["## Targets", ""]
    lines += _table(
        ["target", "measured", "verdict"],
        [list(row) for row in targets(results, infos)],
        text_columns=3,
    )
    lines.append("")
    skipped = [r for r in results if "skipped" in r and not r.get("by_design")]
    errors = [r for r in results if "error" in r]
    if skipped:
        lines += ["## Skipped", ""]
        lines += _table(
            ["workload", "runner", "reason"],
            [[r["workload"], r["runner"], r["skipped"]] for r in skipped],
            text_columns=3,
        )
        lines.append("")
    if errors:
        lines += ["## Errors", ""]
        for r in errors:
            last = r["error"].strip().splitlines()[-1]
            lines.append(f"- {r['workload']} / {r['runner']}: `{last}`")
        lines.append("")
    return "\n".join(lines)
