"""The ``corral`` console script's first lines: signals are exact from the very start.

Until the command line takes SIGINT and SIGTERM over (``CorralGroup.main``), Python's own
handling applies: a Ctrl-C raises ``KeyboardInterrupt`` wherever the interpreter is, which
in the middle of importing a C extension (asyncio imports ``ssl``) can surface as an unrelated
error with exit code 1, and SIGTERM kills the process outright. This module is imported first
(``import corral`` itself imports nothing heavy), installs handlers that end the process at once
with 128 + N — nothing has started, nothing is recorded yet — and only then loads the CLI.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, NoReturn

from corral._signal_handlers import take

__all__ = ["exit_on_signals", "main"]


def _exit_now(sig: int, frame: Any) -> NoReturn:
    try:
        os.write(2, b"corral: interrupted\n")
    finally:
        os._exit(128 + sig)  # not SystemExit: it could land inside an import


def exit_on_signals() -> None:
    """From now on SIGINT and SIGTERM end the process at once with 128 + N."""
    take((signal.SIGINT, signal.SIGTERM), _exit_now)


def main() -> Any:
    """The ``corral`` command (``python -m corral`` too)."""
    exit_on_signals()
    from corral.cli import main as cli

    return cli(prog_name="corral")


if __name__ == "__main__":  # pragma: no cover - python -m corral._console
    sys.exit(main())
