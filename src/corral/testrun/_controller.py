"""The pytest plugin of the ``corral test`` process: pytest collects and reports, corral runs.

It replaces pytest's ``runtestloop`` (collection errors and ``--collect-only`` are left to
pytest, which handles them as it always does): the collected tests become a graph
(:mod:`._suite`), a run of it is assembled by :func:`corral._launch.launch` like every corral
run (recorded in the store: that is where the next run's durations and ``--last-failed``
come from) and runs on its own thread, while this thread serves pytest's hooks
(:class:`~._bridge.Bridge`). ``-x`` / ``--maxfail`` stop the run as an interrupt does.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from corral.testrun._marker import MARKER
from corral.testrun._outcomes import Outcomes
from corral.testrun._serial import failed_first, has_corral_marks, record_run
from corral.testrun._suite import (
    History,
    choose_workers,
    estimates,
    read_history,
    start_cost,
    suite_name,
)

if TYPE_CHECKING:
    from corral.store import Store
    from corral.testrun._bridge import Bridge

__all__ = ["Controller", "TestSettings"]

# --check-order reruns at most this many failed tests, each in a fresh process.
CHECK_ORDER_MAX = 20


@dataclass(frozen=True, kw_only=True)
class TestSettings:
    """What ``corral test`` was asked besides pytest's own arguments. ``workers`` None:
    decide (:func:`~._suite.choose_workers`)."""

    __test__ = False

    args: Sequence[str]
    workers: int | None = None
    timeout: float | None = None
    store: Store | None = None
    last_failed: bool = False
    failed_first: bool = False
    check_order: bool = False


class Controller:
    """The plugin; one per ``corral test``."""

    def __init__(self, settings: TestSettings) -> None:
        self.settings = settings
        self._t0 = time.perf_counter()
        self._collect_s = 0.0
        self._failed: set[str] = set()
        self._note: str | None = None
        self._history = History({}, None)
        self._order_dependent: list[str] = []
        self.bridge: Bridge | None = None
        # The run left to pytest's own loop (_serial.py): what it reported, when it started.
        self._serial: Outcomes | None = None
        self._started_at = datetime.now(UTC)
        self._fork = False  # the workers are forks of this process (_fork.py)

    def pytest_configure(self, config: pytest.Config) -> None:
        config.addinivalue_line("markers", MARKER)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._t0 = time.perf_counter()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        settings = self.settings
        self._history = read_history(settings.store, suite_name(config),
                                     [item.nodeid for item in items])
        if settings.store is None or not (settings.last_failed or settings.failed_first):
            return
        failed = self._history.failed
        self._failed = {item.nodeid for item in items if item.nodeid in (failed or ())}
        if not self._failed:
            self._note = ("corral: no failed tests recorded"
                          + (", running all" if settings.last_failed else ""))
        elif settings.last_failed:
            kept = [item for item in items if item.nodeid in self._failed]
            dropped = [item for item in items if item.nodeid not in self._failed]
            items[:] = kept
            config.hook.pytest_deselected(items=dropped)
            self._note = f"corral: rerunning the {_tests(len(kept))} that failed last time"
        else:
            self._note = f"corral: running the {_tests(len(self._failed))} that failed first"

    def pytest_report_collectionfinish(self, config: pytest.Config) -> str | None:
        return self._note

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._collect_s = time.perf_counter() - self._t0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        recording = self.bridge or self._serial
        if recording is not None:
            recording.record(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        if session.testsfailed and not session.config.option.continue_on_collection_errors:
            return None  # pytest's own loop reports the collection errors
        if session.config.option.collectonly or not session.items:
            return None
        from corral.testrun._fork import can_fork

        self._fork = can_fork()  # now: pytest may have started threads since the start
        workers = self._workers(session)
        if workers is None:
            self._run_serially(session)
            return None  # pytest's own loop runs the tests
        self._run(session, workers)
        if self.settings.check_order and self.bridge is not None:
            self._check_order(self.bridge)
        if session.shouldfail:
            raise session.Failed(session.shouldfail)
        if session.shouldstop:
            raise session.Interrupted(session.shouldstop)
        return True

    def _check_order(self, bridge: Bridge) -> None:
        """``--check-order``: run each failed test again in a fresh worker, after the tests
        of its module that come before it, as plain pytest runs them; those that pass so
        depend on the order tests run in (what ran before them, or beside them, here)."""
        from corral.testrun._pool import passes_in_order

        ids = list(bridge.items)
        failed = [n for n in ids if n in bridge.failed][:CHECK_ORDER_MAX]
        order_dependent = []
        for nodeid in failed:
            module = nodeid.partition("::")[0]
            before = [n for n in ids[: ids.index(nodeid)] if n.partition("::")[0] == module]
            if passes_in_order(self.settings.args, [*before, nodeid], self.settings.timeout):
                order_dependent.append(nodeid)
        self._order_dependent = order_dependent

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.settings.check_order or self.bridge is None:
            return
        checked = min(len(self.bridge.failed), CHECK_ORDER_MAX)
        if not self._order_dependent:
            terminalreporter.write_line(f"corral: --check-order: none of the {checked} "
                                        "failed tests passes in pytest's order either")
            return
        terminalreporter.section("order-dependent tests (corral --check-order)", sep="-")
        for nodeid in self._order_dependent:
            terminalreporter.write_line(f"ORDER-DEPENDENT {nodeid}: failed here, passes after "
                                        "its module's tests in pytest's order")

    def _workers(self, session: pytest.Session) -> int | None:
        """How many workers run the suite (:func:`~._suite.choose_workers`); None: pytest's
        own loop in this process (:mod:`._serial`), when one is best and nothing asks for
        corral's scheduler: a ``--timeout`` (which needs a worker to stop), ``--check-order``
        (which reruns what the run loop saw fail) or ``@pytest.mark.corral``."""
        settings = self.settings
        if settings.workers is not None:
            return settings.workers
        durations = estimates([item.nodeid for item in session.items], self._history.durations)
        workers = choose_workers(durations, start_cost(self._collect_s, fork=self._fork))
        if (workers == 1 and settings.timeout is None and not settings.check_order
                and not has_corral_marks(session.items)):
            return None
        return workers

    def _run_serially(self, session: pytest.Session) -> None:
        """Leave the run to pytest's own loop (returning None lets it run), recording it."""
        self._serial = Outcomes()
        self._started_at = datetime.now(UTC)
        if self._failed and self.settings.failed_first:
            failed_first(session.items, self._failed)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and session.config.option.verbose >= 0:
            reporter.write_line(f"corral: {_tests(len(session.items))} on this process")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self._serial is None or self.settings.store is None:
            return
        record_run(self.settings.store, name=suite_name(session.config),
                   nodeids=[item.nodeid for item in session.items], outcomes=self._serial,
                   started_at=self._started_at,
                   interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)

    def _run(self, session: pytest.Session, workers: int) -> None:
        import asyncio
        import threading

        from corral._errors import ValidationError
        from corral._launch import LaunchOptions, launch
        from corral.testrun._bridge import Bridge
        from corral.testrun._pool import InlineRunner, WorkerPool
        from corral.testrun._suite import shared_fixture_groups, suite_graph

        settings = self.settings
        config = session.config
        name = suite_name(config)
        nodeids = [item.nodeid for item in session.items]
        durations = estimates(nodeids, self._history.durations)
        bridge = self.bridge = Bridge(session)
        # One process, no subprocess: only when chosen (a tiny suite) and no --timeout, which
        # needs a worker to stop.
        inline = settings.workers is None and workers == 1 and settings.timeout is None
        groups = shared_fixture_groups(session.items, durations, self._history.setups, workers)
        successors = {a: b for group in groups for a, b in itertools.pairwise(group)}
        executor: InlineRunner | WorkerPool = (
            InlineRunner(bridge) if inline
            else WorkerPool(bridge, settings.args, workers, durations, successors))
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        try:
            graph = suite_graph(session.items, name=name, executor=executor,
                                timeout=settings.timeout, first=self._failed, groups=groups,
                                warn=reporter.write_line if reporter else None)
        except ValidationError as exc:
            raise pytest.UsageError(f"corral test: {exc}") from None
        if reporter is not None and not inline:
            # Tests of many files come in between each other: one line of progress, not a
            # file name each time the file changes (as pytest-xdist does).
            reporter.showfspath = False
        if reporter is not None and config.option.verbose >= 0:
            where = "this process" if inline else f"{workers} worker processes"
            reporter.write_line(f"corral: {_tests(len(nodeids))} on {where}")
        if isinstance(executor, WorkerPool) and self._fork:
            executor.fork(session, unplug=[self])  # before the run loop's threads start
        run = launch(graph, settings.store, options=LaunchOptions(
            concurrency=executor.slots, fail_fast=False, executors={"pytest": executor},
            log_dir=None, history=durations))
        loop_box: list[asyncio.AbstractEventLoop] = []
        failure: list[BaseException] = []

        def stop() -> None:
            executor.stopping = True
            if loop_box:
                loop_box[0].call_soon_threadsafe(run.runner.cancel)

        async def main() -> None:
            loop_box.append(asyncio.get_running_loop())
            await run.run()

        def drive() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # handed to the main thread, raised there
                failure.append(exc)
            finally:
                bridge.close()

        bridge.on_stop = stop
        thread = threading.Thread(target=drive, name="corral-test-run")
        thread.start()
        try:
            bridge.serve()
        except BaseException:  # Ctrl-C on the main thread: stop the run, then go on up
            stop()
            _drain(bridge)
            thread.join()
            raise
        thread.join()
        if failure:
            raise failure[0]


def _drain(bridge: Bridge) -> None:
    """Serve what is still posted, ignoring failures: the run is being given up."""
    try:
        bridge.serve()
    except BaseException:  # a second Ctrl-C while giving up
        pass


def _tests(n: int) -> str:
    return f"{n} test" if n == 1 else f"{n} tests"
