"""Does ``corral test`` give the same results as plain pytest? (issue 16: "same tests, same
outcomes"). Runs both on the same arguments, one after the other, each writing
``--junit-xml``, and compares the sets of (test, outcome)::

    python -m pytest ARGS --junit-xml DIR/pytest.xml
    python -m corral.cli test --workers N ARGS --junit-xml DIR/corral.xml
    ──> each test's outcome (passed, failed, error, skipped, xfailed), the counts of each
        side, and every test whose outcome differs or that only one side ran

    python -m bench.pytest_outcomes -- tests/unit tests/conformance
    python -m bench.pytest_outcomes --workers 2 --keep /tmp/cmp -- tests/acceptance -x
    python -m bench.pytest_outcomes --recheck 3 -- tests/integration

``--recheck K`` then runs each test that differs K times alone on each side, to tell a flaky
test (one that fails alone under plain pytest too) from a difference ``corral test`` makes.
Exit 0: the same; 1: they differ; 2: a run did not write its report. Not a benchmark (no
times are compared) and not part of the test command: the whole suite takes minutes, run it
in a quiet window. The corral run uses its own store in the output folder (``--store`` to
share one, whose durations then order the tests).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

__all__ = ["compare", "differences", "main", "nodeid", "outcomes", "recheck"]

# A testcase's children, in the order that decides its outcome (a test that failed and then
# errored in teardown counts as failed, as pytest's summary line counts it).
_CHILD_OUTCOMES = (("failure", "failed"), ("error", "error"), ("skipped", "skipped"))


def _outcome(case: ET.Element) -> str:
    tags = {child.tag: child for child in case}
    for tag, outcome in _CHILD_OUTCOMES:
        if tag in tags:
            if tag == "skipped" and tags[tag].get("type") == "pytest.xfail":
                return "xfailed"
            return outcome
    return "passed"


def outcomes(xml_text: str) -> dict[str, str]:
    """Each test case of a pytest ``--junit-xml`` report: ``classname::name`` -> outcome. A
    name that occurs twice (a test that passed and then errored in teardown has one case)
    keeps the worse outcome."""
    root = ET.fromstring(xml_text)
    found: dict[str, str] = {}
    rank = {"failed": 0, "error": 1, "xfailed": 2, "skipped": 3, "passed": 4}
    for case in root.iter("testcase"):
        key = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = _outcome(case)
        if key not in found or rank[outcome] < rank[found[key]]:
            found[key] = outcome
    return found


def differences(plain: dict[str, str], corral: dict[str, str]) -> list[str]:
    """One line per test whose outcome differs, or that only one side reported."""
    lines = []
    for key in sorted(plain.keys() | corral.keys()):
        a, b = plain.get(key, "(not run)"), corral.get(key, "(not run)")
        if a != b:
            lines.append(f"{key}: pytest {a}, corral test {b}")
    return lines


def _counts(found: dict[str, str]) -> str:
    counts = Counter(found.values())
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "no tests"


def _run(cmd: list[str], xml: Path) -> tuple[int, dict[str, str] | None]:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, check=False,
                          stdout=subprocess.DEVNULL)
    if not xml.exists():
        return done.returncode, None
    return done.returncode, outcomes(xml.read_text())


def nodeid(key: str, root: Path) -> str | None:
    """The node id of the junit case ``classname::name`` (``tests.unit.test_x.TestY`` names
    the file ``tests/unit/test_x.py`` and its class ``TestY``), relative to ``root``."""
    classname, _, name = key.partition("::")
    parts = classname.split(".")
    for i in range(len(parts), 0, -1):
        path = Path(*parts[:i]).with_suffix(".py")
        if (root / path).is_file():
            return "::".join([path.as_posix(), *parts[i:], name])
    return None


def recheck(keys: list[str], times: int, workers: str) -> list[str]:
    """Run each test alone ``times`` times under each side: how often it passed."""
    python = sys.executable
    lines = []
    for key in keys:
        test = nodeid(key, Path.cwd())
        if test is None:
            lines.append(f"{key}: no file found for it; not rechecked")
            continue
        quiet = ["-q", "-p", "no:cacheprovider", test]
        sides = {"pytest": [python, "-m", "pytest", *quiet],
                 "corral test": [python, "-m", "corral.cli", "test", "--workers", workers,
                                 "--no-store", *quiet]}
        passed = {side: sum(subprocess.run(cmd, stdin=subprocess.DEVNULL, check=False,
                                           capture_output=True).returncode == 0
                            for _ in range(times))
                  for side, cmd in sides.items()}
        lines.append(f"{test} alone: " + ", ".join(
            f"{side} passed {n}/{times}" for side, n in passed.items()))
    return lines


def compare(args: list[str], out: Path, workers: str, store: str | None,
            times: int = 0) -> int:
    """Run both, print the comparison; the exit code of :func:`main`."""
    python = sys.executable
    plain_xml, corral_xml = out / "pytest.xml", out / "corral.xml"
    plain_code, plain = _run([python, "-m", "pytest", *args, "--junit-xml", str(plain_xml)],
                             plain_xml)
    corral_store = store or f"sqlite:///{out / 'corral.db'}"
    corral_code, corral = _run(
        [python, "-m", "corral.cli", "test", "--workers", workers, "--store", corral_store,
         *args, "--junit-xml", str(corral_xml)], corral_xml)
    print(f"pytest:      exit {plain_code}, "
          + (_counts(plain) if plain is not None else "no report"))
    print(f"corral test: exit {corral_code}, "
          + (_counts(corral) if corral is not None else "no report"))
    if plain is None or corral is None:
        return 2
    lines = differences(plain, corral)
    if plain_code != corral_code:
        lines.insert(0, f"exit codes differ: pytest {plain_code}, corral test {corral_code}")
    print("\n".join(lines) if lines else f"the same: {len(plain)} tests, same outcomes")
    if times > 0 and lines:
        differing = sorted(k for k in plain.keys() | corral.keys()
                           if plain.get(k) != corral.get(k))
        print("\n".join(recheck(differing, times, workers)))
    return 1 if lines else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pytest_outcomes",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="2", help="corral test --workers (default 2)")
    parser.add_argument("--store", help="corral test --store URL (default: a new one in the "
                        "output folder)")
    parser.add_argument("--keep", type=Path, help="write the reports here (default: a "
                        "temporary folder, removed after)")
    parser.add_argument("--recheck", type=int, default=0, metavar="K",
                        help="run each test that differs K times alone on each side")
    parser.add_argument("pytest_args", nargs="*", help="after --: pytest's arguments")
    args = parser.parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return compare(args.pytest_args, args.keep, args.workers, args.store, args.recheck)
    with tempfile.TemporaryDirectory(prefix="corral-outcomes-") as tmp:
        return compare(args.pytest_args, Path(tmp), args.workers, args.store, args.recheck)


if __name__ == "__main__":
    sys.exit(main())
