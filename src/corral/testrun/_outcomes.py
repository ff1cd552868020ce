"""What pytest reported of each test of a ``corral test`` session, whichever way it ran.

Every report of the session passes through :meth:`Outcomes.record` (the controller's
``pytest_runtest_logreport``), from a worker or from this process alike: a test failed if any
of its reports failed (setup, call or teardown), skipped if one skipped (``xfail`` too), and
its duration is what pytest measured of its three phases, its setup apart (the cost of the
fixtures it shares). That is what the store keeps of it for the next run.
"""

from __future__ import annotations

import pytest

__all__ = ["Outcomes"]


class Outcomes:
    """For the controller: :meth:`record` each report; then read the sets and :meth:`value`."""

    def __init__(self) -> None:
        self.failed: set[str] = set()
        self.skipped: set[str] = set()
        # What pytest measured of each test (setup, call and teardown): a passed test's value
        # in the store, where the next run's estimates come from. The run loop's own times
        # also count the trip to a worker and back, which a tiny test does not take in-process.
        self.seconds: dict[str, float] = {}
        self.setup_s: dict[str, float] = {}  # and of its setup: the cost of shared fixtures

    def record(self, report: pytest.TestReport) -> None:
        """Called for every report of this session (the controller's logreport hook)."""
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration
        if report.when == "setup":
            self.setup_s[report.nodeid] = report.duration
        if report.failed:
            self.failed.add(report.nodeid)
        elif report.skipped:
            self.skipped.add(report.nodeid)

    def value(self, nodeid: str) -> list[float]:
        """A passed test's stored value: ``[seconds, setup seconds]``
        (:func:`~corral.testrun._suite.read_history` reads it back)."""
        return [round(self.seconds.get(nodeid, 0.0), 6), round(self.setup_s.get(nodeid, 0.0), 6)]
