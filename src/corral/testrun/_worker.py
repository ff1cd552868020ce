"""A ``corral test`` worker: one pytest session that runs the tests it is sent.

Started as ``python [-P] -m corral.testrun._worker IN_FD OUT_FD PYTEST_ARGS...`` by
:class:`~corral.testrun._pool.WorkerPool`. It collects with the same arguments as the
``corral test`` process, then reads node ids, one a line, from ``IN_FD`` and runs each; it
writes JSON lines to ``OUT_FD``::

    {"ready": N}                  collected N tests; send me work
    {"start": NODEID}             the test starts now (its timeout counts from here)
    {"report": {...}}             a pytest report (pytest_report_to_serializable)
    {"warning": {...}}            a warning a test raised (for pytest's warnings summary)
    {"done": NODEID}              the test is over
    {"missing": NODEID}           no such test here (collected differently)

End of ``IN_FD``: tear down what is still set up and exit. The ``corral test`` process gone
(killed, even with SIGKILL): exit within half a second, whatever the test is doing. Its own
terminal output and ``--junit-xml`` are switched off (the ``corral test`` process reports),
and so are its writes to pytest's cache (``--lf`` state belongs to the process that saw every
test).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from typing import Any, BinaryIO

import orjson
import pytest

from corral.testrun._items import ItemRunner

__all__ = ["WorkerPlugin", "die_with", "main", "quiet_worker"]

# How often a worker checks that the corral test process still lives.
PARENT_CHECK_S = 0.5


class WorkerPlugin:
    """The worker's side of the protocol, as a pytest plugin."""

    def __init__(self, inbox: BinaryIO, outbox: BinaryIO) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.config: pytest.Config | None = None

    def send(self, message: dict[str, Any]) -> None:
        self.outbox.write(orjson.dumps(message) + b"\n")
        self.outbox.flush()

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        self.config = config
        quiet_worker(config)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        items = {item.nodeid: item for item in session.items}
        self.send({"ready": len(items)})
        runner = ItemRunner()
        for line in self.inbox:
            nodeid = line.decode().rstrip("\n")
            item = items.get(nodeid)
            if item is None:
                self.send({"missing": nodeid})
                continue
            self.send({"start": nodeid})
            runner.run(item)
            self.send({"done": nodeid})
        runner.finish()
        return True

    def pytest_warning_recorded(self, warning_message: warnings.WarningMessage, when: str,
                                nodeid: str, location: tuple[str, int, str] | None) -> None:
        if when != "runtest":
            return  # collection and configuration warnings: the corral test process has them
        self.send({"warning": {
            "message": str(warning_message.message),
            "category": warning_message.category.__name__,
            "filename": warning_message.filename, "lineno": warning_message.lineno,
            "nodeid": nodeid, "location": location}})

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        assert self.config is not None
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        self.send({"report": data})


def quiet_worker(config: pytest.Config) -> None:
    """Switch off what only the ``corral test`` process does: write ``--junit-xml`` and
    pytest's cache (``--lf`` state: a worker saw a part of the suite)."""
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is not None:
        del config.stash[xml_key]
        config.pluginmanager.unregister(xml)
    cache = getattr(config, "cache", None)
    if cache is not None:
        cache.set = lambda key, value: None


def die_with(parent: int) -> None:
    """Exit when ``parent`` (the corral test process) is gone, even with a test still running:
    a watch thread, since PR_SET_PDEATHSIG follows the parent's *thread* that started us, and
    replacements are started by threads that end."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="corral-test-parent-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    in_fd, out_fd, *args = argv
    die_with(os.getppid())
    inbox = os.fdopen(int(in_fd), "rb")
    outbox = os.fdopen(int(out_fd), "wb")
    return int(pytest.main(args, plugins=[WorkerPlugin(inbox, outbox)]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
