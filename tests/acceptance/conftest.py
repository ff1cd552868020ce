"""Fixtures for acceptance tests: the real ``corral`` CLI, run in a subprocess in a tmp dir.

Timeouts here are hang guards only, never assertions: a healthy test finishes in a fraction
of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

# Generous: on a loaded 2-core CI machine a Python start alone can take a second.
HANG_GUARD_S = 60.0

# Variables that would change what the CLI does or how it prints, removed from the child's
# environment so that a developer's shell cannot make a test pass or fail.
_SCRUBBED_PREFIXES = ("CORRAL_",)
_SCRUBBED = {"FORCE_COLOR", "CLICOLOR_FORCE", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR"}


def cli_env(tmp_path: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _SCRUBBED and not k.startswith(_SCRUBBED_PREFIXES)
    }
    # Wide enough that summary tables do not wrap the words a test looks for.
    env["COLUMNS"] = "200"
    # No PYTHONPATH: a `call:` finds the modules next to its pipeline as it does for a user,
    # not because the test put them on the path (which once hid that it did not).
    env.pop("PYTHONPATH", None)
    env.update(extra or {})
    return env


def corral_script() -> str:
    """The ``corral`` console script of this interpreter's environment: the command a user
    types (not ``python -m corral``, which puts the working directory on the import path)."""
    script = Path(sys.executable).parent / "corral"
    if not script.exists():  # pragma: no cover - an environment without the script
        raise RuntimeError(f"no corral console script next to {sys.executable}: "
                           "pip install -e . in this environment")
    return str(script)


def corral_argv(*args: str) -> list[str]:
    return [corral_script(), *args]


RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def corral(tmp_path: Path) -> RunCli:
    """Run ``corral ARGS...`` in ``tmp_path`` (or ``cwd=``); returns the completed process."""

    def run(
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = HANG_GUARD_S,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            corral_argv(*args),
            cwd=cwd or tmp_path,
            env=cli_env(tmp_path, env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write a (dedented) file under ``tmp_path``; returns its path."""

    def write_file(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write_file


@pytest.fixture
def corral_popen(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``corral ARGS`` in ``tmp_path`` in its own session (so that a signal sent to it
    reaches only it), without waiting. Whatever is still running at teardown is killed."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            corral_argv(*args),
            cwd=tmp_path,
            env=cli_env(tmp_path, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=HANG_GUARD_S)


@pytest.fixture
def corral_tty(tmp_path: Path) -> Callable[..., tuple[int, str]]:
    """Run ``corral ARGS`` in ``tmp_path`` with stdout and stderr on a pseudo-terminal;
    returns the exit code and everything written to the terminal."""
    import pty
    import select
    import time

    def run(*args: str) -> tuple[int, str]:
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            corral_argv(*args),
            cwd=tmp_path,
            env=cli_env(tmp_path, {"TERM": "xterm-256color"}),
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        chunks = []
        deadline = time.monotonic() + HANG_GUARD_S
        try:
            while time.monotonic() < deadline:  # until the child's side closes (EIO)
                ready, _, _ = select.select([master], [], [], 0.5)
                if not ready:
                    continue
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                chunks.append(data)
        finally:
            os.close(master)
            if proc.poll() is None and time.monotonic() >= deadline:
                proc.kill()
        code = proc.wait(timeout=HANG_GUARD_S)
        return code, b"".join(chunks).decode("utf-8", errors="replace")

    return run
