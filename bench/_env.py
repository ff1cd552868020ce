"""The environment a benchmarked ``corral`` process gets: the one a user's shell would give it.

Two things differ between this machine's sandbox and a user's, and both move whole-process
figures: ``CORRAL_*`` settings left over from the benchmarking shell (a user starts with the
defaults), and ``PYTHONDONTWRITEBYTECODE=1``, which this sandbox sets. Without bytecode caches
every process compiles corral's modules from source (about 0.35 G instructions of a 1.4 G
one-task ``corral run``), which no installed corral does after its first run. So the processes
run without that variable, with corral and the benchmark compiled once beforehand.
"""

from __future__ import annotations

import compileall
import os
from functools import cache
from pathlib import Path

__all__ = ["REPO", "user_env"]

REPO = Path(__file__).resolve().parents[1]


@cache
def _compiled() -> None:
    for folder in (REPO / "src" / "corral", REPO / "bench"):
        compileall.compile_dir(folder, quiet=1)


def user_env() -> dict[str, str]:
    """``os.environ`` as a user's shell would have it, with the repository importable."""
    _compiled()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CORRAL_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env
