"""``corral test`` against plain pytest and pytest-xdist on real suites (issue 16 §2).

Each suite is a PyPI project's own test suite, from its sdist, pinned, in a venv of its own
built by ``python -m bench.pytest_suites_build`` (see there). This script runs, interleaved
(one repetition of every mode, then the next), on each suite::

    pytest              plain, serial
    xdist-load          pytest -n 2                    (xdist's default, --dist load)
    xdist-worksteal     pytest -n 2 --dist worksteal
    corral-2            corral test --workers 2
    corral-auto         corral test                    (--workers auto)

corral's runs share one store per suite (``<suite>/corral.db``), emptied at the start: the
first corral run knows no durations, the later ones do; the first run is reported apart.
Every run is a fresh process, timed wall clock from start to exit. The report gives the best
and the median of each mode, and checks that every mode got the same outcome (pytest's summary
line without its time, and the exit code).

    python -m bench.pytest_suites_build                   # once: the venvs (network)
    python -m bench.pytest_suites --reps 5                # every suite
    python -m bench.pytest_suites --suites toolz --reps 1 # a smoke run

Figures mean something only on a quiet machine: nothing else running.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / "bench" / ".pytest-suites"


@dataclass(frozen=True)
class Suite:
    """A project's test suite: its sdist, where its tests are, what they need to run."""

    name: str
    version: str
    tests: tuple[str, ...]  # paths inside the unpacked sdist
    deps: tuple[str, ...] = ()  # pinned test requirements besides pytest
    note: str = ""

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.version}"


SUITES = {
    s.name: s
    for s in (
        Suite("more-itertools", "11.2.1", ("tests",), note="a long tail: one slow test"),
        Suite("toolz", "1.2.0", ("toolz/tests",), note="tiny: workers cannot pay for themselves"),
        Suite("boltons", "26.2.0", ("tests",)),
        Suite("attrs", "26.1.0", ("tests",), deps=("hypothesis", "cloudpickle", "pympler==1.1")),
    )
}

MODES = ("pytest", "xdist-load", "xdist-worksteal", "corral-2", "corral-auto")


def suite_dir(base: Path, suite: Suite) -> Path:
    return base / suite.folder


def command(mode: str, venv_bin: Path, suite: Suite, store: Path) -> list[str]:
    tests = list(suite.tests)
    quiet = ["-q", "-p", "no:cacheprovider"]
    if mode == "pytest":
        return [str(venv_bin / "pytest"), *quiet, *tests]
    if mode == "xdist-load":
        return [str(venv_bin / "pytest"), *quiet, "-n", "2", *tests]
    if mode == "xdist-worksteal":
        return [str(venv_bin / "pytest"), *quiet, "-n", "2", "--dist", "worksteal", *tests]
    corral = [str(venv_bin / "corral"), "test", "--store", f"sqlite:///{store}"]
    if mode == "corral-2":
        return [*corral, "--workers", "2", *quiet, *tests]
    if mode == "corral-auto":
        return [*corral, *quiet, *tests]
    raise ValueError(mode)


def outcome(stdout: str) -> str:
    """pytest's summary line without the time: what every mode must agree on."""
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return re.sub(r"\s+in [\d.]+s.*$", "", last).strip("= ")


@dataclass
class Run:
    mode: str
    seconds: float
    code: int
    outcome: str


def suite_env() -> dict[str, str]:
    """A user's environment: no ``CORRAL_*`` or ``PYTEST_*`` settings from this shell, and
    bytecode written (this sandbox sets ``PYTHONDONTWRITEBYTECODE``, under which every run
    would compile and assert-rewrite the whole suite again, as no developer's machine does
    after the first run)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CORRAL_", "PYTEST_")) and k != "PYTHONDONTWRITEBYTECODE"}
    env["COLUMNS"] = "200"
    return env


def run_once(mode: str, suite: Suite, base: Path) -> Run:
    where = suite_dir(base, suite)
    cmd = command(mode, where / "venv" / "bin", suite, where / "corral.db")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=where / "src", env=suite_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    return Run(mode, seconds, done.returncode, outcome(done.stdout))


def bench_suite(suite: Suite, base: Path, reps: int, modes: tuple[str, ...]) -> list[Run]:
    where = suite_dir(base, suite)
    if not (where / "venv" / "bin" / "pytest").exists():
        raise SystemExit(f"{where}: no venv; run python -m bench.pytest_suites_build first")
    for stale in where.glob("corral.db*"):
        stale.unlink()  # the first corral run knows no durations
    # corral's bytecode, as an installed wheel has it (pytest's own is in site-packages).
    subprocess.run([str(where / "venv" / "bin" / "python"), "-m", "compileall", "-q",
                    str(ROOT / "src" / "corral")], check=True, stdout=subprocess.DEVNULL)
    # Untimed: the suite's bytecode and pytest's rewritten test modules, written once.
    collect = [*command("pytest", where / "venv" / "bin", suite, where / "corral.db"),
               "--collect-only"]
    subprocess.run(collect, cwd=where / "src", env=suite_env(), stdin=subprocess.DEVNULL,
                   capture_output=True, check=False)
    runs = []
    for rep in range(reps):
        for mode in modes:
            run = run_once(mode, suite, base)
            print(f"  {suite.name} rep {rep + 1} {mode:16} {run.seconds:7.2f}s "
                  f"exit {run.code}  {run.outcome}", file=sys.stderr)
            runs.append(run)
    return runs


def report(suite: Suite, runs: list[Run], modes: tuple[str, ...]) -> list[str]:
    lines = [f"### {suite.name} {suite.version}" + (f" ({suite.note})" if suite.note else ""),
             "", "| mode | first | best | median | runs |", "|---|---|---|---|---|"]
    for mode in modes:
        times = [r.seconds for r in runs if r.mode == mode]
        if not times:
            continue
        lines.append(f"| {mode} | {times[0]:.2f} s | {min(times):.2f} s | "
                     f"{statistics.median(times):.2f} s | {len(times)} |")
    outcomes = {(r.outcome, r.code) for r in runs}
    lines.append("")
    if len(outcomes) == 1:
        (text, code), = outcomes
        lines.append(f"Every run: `{text}`, exit {code}.")
    else:
        lines.append("**Outcomes differ:** " + "; ".join(
            f"{r.mode}: `{r.outcome}` exit {r.code}" for r in runs))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pytest_suites",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", default=",".join(SUITES),
                        help=f"comma-separated, of {', '.join(SUITES)}")
    parser.add_argument("--modes", default=",".join(MODES), help=f"of {', '.join(MODES)}")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help="where the suites' venvs are (python -m bench.pytest_suites_build)")
    args = parser.parse_args(argv)
    names = [n for n in args.suites.split(",") if n]
    modes = tuple(m for m in args.modes.split(",") if m)
    unknown = [n for n in names if n not in SUITES] + [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    out = [f"## corral test against pytest and pytest-xdist ({args.reps} repetitions, "
           f"{os.cpu_count()} CPUs)", ""]
    for name in names:
        runs = bench_suite(SUITES[name], args.dir, args.reps, modes)
        out += [*report(SUITES[name], runs, modes), ""]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
