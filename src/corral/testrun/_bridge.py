"""The pytest session of the ``corral test`` process, as executors see it.

pytest's hooks (the terminal reporter, ``--junit-xml``, ``-x``) are not thread-safe, and
the run loop and the workers' readers run on threads of their own, so every call into pytest
is *posted* to the main thread, which serves them in order (:meth:`Bridge.serve`) until the
run is over. A worker's reports therefore reach pytest in the order the worker sent them,
and a test's outcome is decided (:meth:`Bridge.finish`) after its last report.
"""

from __future__ import annotations

import builtins
import queue
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from corral.executors._base import ERROR, OK, SKIP, Sink, Work
from corral.testrun._marker import MARKER
from corral.testrun._outcomes import Outcomes

__all__ = ["MARKER", "Bridge", "TestFailed"]


class TestFailed(Exception):
    """pytest reported the test failed (or errored in setup or teardown)."""

    __test__ = False  # not a test class, whatever pytest thinks of the name


class Bridge(Outcomes):
    """For executors (any thread): :meth:`post`. For the ``corral test`` process's main
    thread: :meth:`serve`, :meth:`record` (:class:`~._outcomes.Outcomes`), and everything
    posted."""

    def __init__(self, session: pytest.Session) -> None:
        super().__init__()
        self.session = session
        self.config = session.config
        self.items = {item.nodeid: item for item in session.items}
        self.started: set[str] = set()
        self.on_stop: Callable[[], None] | None = None
        self._stopped = False
        self._calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue())

    # -------------------------------------------------------------- any thread
    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Have the main thread call ``fn(*args)``."""
        self._calls.put((fn, args))

    def close(self) -> None:
        """Let :meth:`serve` return once everything posted before is done."""
        self._calls.put(None)

    # -------------------------------------------------------------- main thread
    def serve(self) -> None:
        """Run what is posted until :meth:`close`."""
        while (call := self._calls.get()) is not None:
            fn, args = call
            fn(*args)

    def logstart(self, nodeid: str) -> None:
        if nodeid in self.started or self._stopped:
            return
        self.started.add(nodeid)
        item = self.items[nodeid]
        self.config.hook.pytest_runtest_logstart(nodeid=nodeid, location=item.location)

    def logreport(self, data: dict[str, Any]) -> None:
        """A report a worker sent (serialised). Once the run stops (-x), what the workers
        still send is dropped, as pytest never runs a test after it stops."""
        if self._stopped:
            return
        report = self.config.hook.pytest_report_from_serializable(config=self.config, data=data)
        # JSON has no tuples: pytest's plugins (junitxml on a skip) check for them.
        if isinstance(report.location, list):
            report.location = tuple(report.location)
        if isinstance(report.longrepr, list):
            report.longrepr = tuple(report.longrepr)
        self.config.hook.pytest_runtest_logreport(report=report)

    def warning(self, data: dict[str, Any]) -> None:
        """A warning a worker's test raised: into pytest's warnings summary."""
        if self._stopped:
            return
        name = data["category"]
        category = getattr(builtins, name, None)
        if not (isinstance(category, type) and issubclass(category, Warning)):
            category = type(name, (UserWarning,), {})  # the summary shows only its name
        message = warnings.WarningMessage(data["message"], category, data["filename"],
                                          data["lineno"])
        location = tuple(data["location"]) if data["location"] else None
        self.config.hook.pytest_warning_recorded.call_historic(kwargs={
            "warning_message": message, "when": "runtest", "nodeid": data["nodeid"],
            "location": location})

    def fail(self, work: Work, why: str, duration: float = 0.0) -> None:
        """Report ``work``'s test failed for a reason outside it (its worker crashed, it ran
        past ``--timeout``): a failed call, with ``why`` as its message."""
        nodeid = work.task_id
        if self._stopped:
            return
        item = self.items[nodeid]
        self.logstart(nodeid)
        report = pytest.TestReport(
            nodeid, item.location, dict.fromkeys(item.keywords, 1), "failed", why, "call",
            duration=duration)
        self.config.hook.pytest_runtest_logreport(report=report)

    def finish(self, work: Work, sink: Sink) -> None:
        """The test of ``work`` is over: tell pytest and the run loop how it went."""
        nodeid = work.task_id
        if nodeid in self.started:
            item = self.items[nodeid]
            self.config.hook.pytest_runtest_logfinish(nodeid=nodeid, location=item.location)
        session = self.session
        if (session.shouldfail or session.shouldstop) and not self._stopped:
            # -x / --maxfail: start nothing more. Before the outcome, so that the run loop
            # hears of the stop before it could start the next test.
            self._stopped = True
            if self.on_stop is not None:
                self.on_stop()
        if nodeid in self.failed:
            sink(work, ERROR, TestFailed(nodeid))
        elif nodeid in self.skipped:
            sink(work, SKIP, None)
        else:
            sink(work, OK, self.value(nodeid))
