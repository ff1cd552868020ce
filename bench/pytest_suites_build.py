"""Build the venvs of :mod:`bench.pytest_suites`: one per suite, pinned.

For each suite: its sdist (``pip download --no-binary :all: NAME==VERSION``), unpacked into
``<dir>/<name>-<version>/src``; a venv ``<dir>/<name>-<version>/venv`` with the project
installed from that source, its pinned test requirements, pytest and pytest-xdist at the
versions of ``requirements/test.lock``, and this corral (editable: the benchmark measures
the working tree). Needs the network once; a suite already built is left alone unless
``--force``.

    python -m bench.pytest_suites_build [--suites toolz,attrs] [--dir DIR] [--force]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import venv
from pathlib import Path

from bench.pytest_suites import DEFAULT_DIR, ROOT, SUITES, Suite, suite_dir

LOCK = ROOT / "requirements" / "test.lock"


def locked(name: str) -> str:
    """``name==version`` as requirements/test.lock pins it."""
    for line in LOCK.read_text().splitlines():
        if line.lower().startswith(f"{name.lower()}=="):
            return line.strip()
    raise SystemExit(f"{name} is not pinned in {LOCK}: add it to requirements/test.in and "
                     "run scripts/lock")


def pin(requirement: str) -> str:
    return requirement if "==" in requirement else locked(requirement)


def build(suite: Suite, base: Path, force: bool) -> None:
    where = suite_dir(base, suite)
    if (where / "venv" / "bin" / "pytest").exists() and not force:
        print(f"{suite.folder}: built already", file=sys.stderr)
        return
    shutil.rmtree(where, ignore_errors=True)
    (where / "sdist").mkdir(parents=True)
    venv.create(where / "venv", with_pip=True)
    pip = [str(where / "venv" / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip[:-2], "download", "-q", "--no-deps", "--no-binary", ":all:",
                    f"{suite.name}=={suite.version}", "-d", str(where / "sdist")], check=True)
    archive, = (where / "sdist").glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(where / "sdist", filter="data")
    unpacked, = (p for p in (where / "sdist").iterdir() if p.is_dir())
    unpacked.rename(where / "src")
    requirements = [locked("pytest"), locked("pytest-xdist"), *map(pin, suite.deps)]
    subprocess.run([*pip, str(where / "src"), *requirements], check=True)
    subprocess.run([*pip, "-e", str(ROOT), "-c", str(LOCK)], check=True)
    print(f"{suite.folder}: built in {where}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pytest_suites_build",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", default=",".join(SUITES))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--force", action="store_true", help="rebuild what is built")
    args = parser.parse_args(argv)
    for name in args.suites.split(","):
        if name not in SUITES:
            parser.error(f"unknown suite {name!r}; of {', '.join(SUITES)}")
        build(SUITES[name], args.dir, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
