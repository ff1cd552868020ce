"""The runner contract: how the benchmark drives one engine on one workload.

The child process (:mod:`bench.child`) calls ``setup()`` once (untimed: imports, building the
engine's own description of the DAG, starting a cluster), then ``run_once()`` per repetition
(timed as a whole: everything the engine does to go from that description to every task
finished, its own validation and ordering included), ``measure()`` after each repetition
(untimed by the headline clock: extra figures such as corral's validate+plan) and finally
``teardown()``. A runner that cannot run a workload raises :class:`Skip` with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.workloads import Workload

__all__ = ["BenchRunner", "Skip"]


class Skip(Exception):
    """This runner cannot run this workload here; the message says why."""


class BenchRunner:
    """Base class: override ``run_once``; the other hooks default to doing nothing."""

    def __init__(self, workload: Workload) -> None:
        self.wl = workload

    def setup(self) -> None:
        """Untimed preparation."""

    def run_once(self) -> dict[str, float] | None:
        """Run every task once. May return sub-timings (seconds) included in the total."""
        raise NotImplementedError

    def measure(self) -> dict[str, float] | None:
        """Untimed extra measurements after a repetition (seconds)."""
        return None

    def teardown(self) -> None:
        """Release what ``setup`` took."""
