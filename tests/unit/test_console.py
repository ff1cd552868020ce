"""The console script's first handlers: a signal while corral is still importing ends it at
once with 128 + N and one line, whatever the interpreter was in the middle of."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers.waiting import wait_for

import corral

GUARD = 60  # seconds: a hang guard only


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_an_import_exits_with_128_plus_n(tmp_path: Path, sig: int) -> None:
    marker = tmp_path / "importing"
    (tmp_path / "slowmod.py").write_text(
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(30)\n")
    code = "import corral._console as c; c.exit_on_signals(); import slowmod"
    src = str(Path(corral.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), src])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(marker.exists, "the slow import to start", timeout=GUARD)
        os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=GUARD)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig
    assert stderr == "corral: interrupted\n"


def test_import_corral_loads_nothing_heavy() -> None:
    code = ("import sys, corral, corral._console; "
            "print(sorted(m for m in ('asyncio', 'pydantic', 'yaml', 'click', 'rich') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=GUARD).stdout
    assert out.strip() == "[]"
