"""The child side of the process executor: ``python -m corral.executors._process_worker R W``.

Reads one framed message at a time from fd ``R`` — ``cloudpickle.dumps((fn, args, kwargs,
log_path))`` — runs it, and writes ``(status, payload)`` back on fd ``W``. While a task runs, its
stdout and stderr (file descriptors 1 and 2, so also those of any subprocess it starts) go to
the attempt's log file.

Started as a fresh interpreter (not ``fork``, not ``multiprocessing``'s ``spawn``) so that a
user's ``__main__`` is never re-imported and re-run in the worker; cloudpickle ships functions
defined in ``__main__`` and closures by value.
"""

from __future__ import annotations

import os
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from corral._errors import Skip

OK, ERROR, SKIP = 0, 1, 2


def _run_one(message: bytes) -> bytes:
    saved = None
    result: tuple[int, Any]
    try:
        fn, args, kwargs, log_path = cloudpickle.loads(message)
        if log_path is not None:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            sys.stdout.flush()
            sys.stderr.flush()
            saved = (os.dup(1), os.dup(2))
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
        result = (OK, fn(*args, **kwargs))
    except Skip:
        result = (SKIP, None)
    except BaseException as exc:
        text = traceback.format_exc()
        sys.stderr.write(text)
        result = (ERROR, (exc, text))
    finally:
        if saved is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    try:
        return bytes(cloudpickle.dumps(result))
    except Exception as exc:
        what = "return value" if result[0] == OK else "exception"
        error = TypeError(f"the task's {what} could not be pickled: {exc}")
        return bytes(cloudpickle.dumps((ERROR, (error, traceback.format_exc()))))


def main(read_fd: int, write_fd: int) -> None:
    rx = Connection(read_fd, writable=False)
    tx = Connection(write_fd, readable=False)
    while True:
        try:
            message = rx.recv_bytes()
        except (EOFError, OSError):
            return
        tx.send_bytes(_run_one(message))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
