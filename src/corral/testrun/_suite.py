"""A collected pytest suite as a corral graph: one task per test.

- **Order.** Each test's estimate is the median of its earlier successful durations in the
  store (keyed by node id, under the suite's name ``pytest:<rootdir>``); a test never seen
  gets its module's average, else the suite's, else :data:`UNKNOWN_S`. The scheduler runs the
  longest remaining path first, so a 15 s test starts at once instead of last.
- **after / resources.** ``@pytest.mark.corral(after=[...])`` makes the test depend on those
  tests (node ids, or names in the test's module or class; a parametrised name means every
  case), with the ``all_done`` rule: it runs after them however they ended, as plain pytest
  would. ``@pytest.mark.corral(resources={"db": 1})`` requests resources whose capacity is 1
  (or the largest request): tests that share one never run at once.
- **last failed.** ``--last-failed`` keeps the tests that failed in the suite's latest
  recorded run; ``--failed-first`` runs them first (priority 1).
- **Durations** are what pytest measured (setup, call, teardown), stored as each passed
  test's value; a test without one in the latest run falls back to the run loop's times.
- **Shared fixtures.** Tests that share a costly module- or class-scoped fixture run one
  after another, on the worker that has it set up (the next of them goes first to the
  worker the last one freed), unless spreading them finishes sooner
  (:func:`shared_fixture_groups`).
- **How many workers.** :func:`choose_workers`: the fewest that finish soonest, counting
  what starting a worker costs (a collection of the suite); one means this process.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from corral._graph import Graph
    from corral.executors._base import Executor
    from corral.store import Store

__all__ = ["UNKNOWN_S", "History", "choose_workers", "estimates", "read_history",
           "shared_fixture_groups", "start_cost", "suite_graph", "suite_name"]

# The estimate of a test when the store knows no test of the suite: small, so that a first
# run of a suite stays in one process unless it has many tests (with forked workers, some
# 200 or more; toolz's 188, which workers cannot speed up, stay).
UNKNOWN_S = 0.003
# What starting a worker costs besides collecting the suite: an interpreter and pytest.
WORKER_START_S = 0.3
# What forked workers cost (_fork.py) over pytest's own loop in this process: the run loop,
# its threads and its run record, the forks, and the pages both processes then write to
# copied (measured: 0.15 s more CPU time on a one-test suite with 2 workers than without).
FORK_START_S = 0.15
# What sending a test to a worker and its reports back costs, on top of the test.
PER_TEST_S = 0.001
# A shared fixture that takes this long to set up keeps its tests on one worker.
GROUP_MIN_S = 0.05
# Fewer workers win unless more finish this much sooner.
WORTH_IT = 0.9


def suite_name(config: pytest.Config) -> str:
    """The name the suite's runs are stored under."""
    return f"pytest:{config.rootpath}"


def run_test() -> None:
    """The action of every test task: the ``pytest`` executor runs the test its task id
    names, and never calls this."""
    raise RuntimeError("a corral test task runs on the 'pytest' executor only")


def estimates(nodeids: Sequence[str], known: Mapping[str, float]) -> dict[str, float]:
    """Each test's estimate: its own known duration, else its module's average, else the
    suite's, else :data:`UNKNOWN_S`."""
    by_module: dict[str, list[float]] = defaultdict(list)
    for nodeid, seconds in known.items():
        by_module[nodeid.partition("::")[0]].append(seconds)
    suite = sum(known.values()) / len(known) if known else UNKNOWN_S
    module_mean = {m: sum(v) / len(v) for m, v in by_module.items()}
    return {n: known[n] if n in known else module_mean.get(n.partition("::")[0], suite)
            for n in nodeids}


def start_cost(collect_s: float, *, fork: bool) -> float:
    """What starting the workers costs (they start together): a fork of this process, which
    has the suite collected; else a new interpreter that collects it again."""
    return FORK_START_S if fork else collect_s + WORKER_START_S


def choose_workers(durations: Mapping[str, float], start_s: float,
                   cpus: int | None = None) -> int:
    """How many workers the suite deserves: 1 (this process) when starting workers costs
    more than they save. A run on ``n`` workers takes about ``max(work / n, longest)``, where
    the work is the tests and their trips to the workers (:data:`PER_TEST_S` a test: they
    overlap the longest test, not add to it), plus starting the workers (``start_s``,
    :func:`start_cost`); more workers than CPUs only share them."""
    cpus = cpus or len(os.sched_getaffinity(0)) or 1
    total = sum(durations.values())
    longest = max(durations.values(), default=0.0)
    best, best_time = 1, total
    for n in range(2, min(cpus, len(durations)) + 1):
        work = total + len(durations) * PER_TEST_S
        predicted = max(work / n, longest + PER_TEST_S) + start_s
        if predicted < best_time * WORTH_IT:
            best, best_time = n, predicted
    return best


@dataclass(frozen=True)
class History:
    """What the store says of a suite: each test's duration as pytest measured it in the
    latest run (a passed test's value), else the median of the run loop's times of its recent
    passes; and the tests that failed in the latest run (None: no run recorded)."""

    durations: Mapping[str, float]
    failed: set[str] | None
    setups: Mapping[str, float] = field(default_factory=dict)  # each test's setup phase


def read_history(store: Store | None, name: str, nodeids: Sequence[str]) -> History:
    if store is None:
        return History({}, None)
    from corral._spec import TaskState

    runs = store.list_runs(pipeline=name, limit=1)
    if not runs:
        return History(store.task_durations(name, nodeids), None)
    tasks = store.load_run(runs[0].id).tasks
    measured: dict[str, float] = {}
    setups = {}
    for task in tasks.values():
        value = task.value  # [seconds, setup seconds] as pytest measured them
        if type(value) is list and len(value) == 2 and all(type(v) is float for v in value):
            measured[task.id], setups[task.id] = value
    # The medians of earlier passes only for the tests the latest run did not measure (none,
    # mostly: the query costs as much as the rest of the planning).
    missing = [n for n in nodeids if n not in measured]
    durations = {**store.task_durations(name, missing), **measured} if missing else measured
    return History(durations, {t.id for t in tasks.values() if t.state is TaskState.FAILED},
                   setups)


def _marks(item: pytest.Item) -> tuple[list[str], dict[str, float]]:
    after: list[str] = []
    resources: dict[str, float] = {}
    for mark in item.iter_markers("corral"):
        unknown = set(mark.kwargs) - {"after", "resources"}
        if mark.args or unknown:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.corral takes after=[...] and "
                                    f"resources={{...}} only, not {sorted(unknown) or mark.args}")
        names = mark.kwargs.get("after", ())
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise pytest.UsageError(f"{item.nodeid}: corral(after=...) must be a list of test "
                                    f"names or node ids, not {names!r}")
        after.extend(names)
        wanted = mark.kwargs.get("resources", {})
        if not isinstance(wanted, Mapping) or not all(
                isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
                and v > 0 and math.isfinite(v) for k, v in wanted.items()):
            raise pytest.UsageError(f"{item.nodeid}: corral(resources=...) must map resource "
                                    f"names to amounts > 0, not {wanted!r}")
        resources.update({k: float(v) for k, v in wanted.items()})
    return after, resources


def _resolve(name: str, item: pytest.Item, ids: Mapping[str, int],
             by_base: Mapping[str, list[str]]) -> list[str]:
    """The collected tests ``name`` means, seen from ``item``: a node id, a name in the
    item's class or module; a parametrised test's base name means all of its cases."""
    scopes = [item.nodeid.rsplit("::", 1)[0], item.nodeid.partition("::")[0]]
    for candidate in (name, *(f"{scope}::{name}" for scope in scopes)):
        if candidate in ids:
            return [candidate]
        if candidate in by_base:
            return list(by_base[candidate])
    return []


def fixture_scope(item: pytest.Item) -> str | None:
    """Where the module- or class-scoped fixtures ``item`` uses live: its module's node id,
    else its class's; None: it uses none."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    scopes = {defs[-1].scope for defs in info.name2fixturedefs.values() if defs}
    if "module" in scopes:
        return item.nodeid.partition("::")[0]
    if "class" in scopes:
        cls = item.getparent(pytest.Class)
        return cls.nodeid if cls is not None else None
    return None


def shared_fixture_groups(
    items: Sequence[pytest.Item], durations: Mapping[str, float],
    setups: Mapping[str, float], workers: int,
) -> list[list[str]]:
    """The tests worth running one after another on one worker: those sharing a module- or
    class-scoped fixture whose setup costs at least :data:`GROUP_MIN_S` (measured: the
    first test's setup over the others'), unless together they would take longer than a
    worker's share of the suite (then spreading them wins despite the second setup)."""
    by_scope: dict[str, list[str]] = defaultdict(list)
    for item in items:
        scope = fixture_scope(item)
        if scope is not None:
            by_scope[scope].append(item.nodeid)
    share = sum(durations.values()) / max(workers, 1)
    groups = []
    for members in by_scope.values():
        measured = sorted(setups[n] for n in members if n in setups)
        if len(members) < 2 or len(measured) < 2:
            continue
        cost = measured[-1] - measured[len(measured) // 2]
        if cost >= GROUP_MIN_S and sum(durations.get(n, 0.0) for n in members) <= share:
            groups.append(members)
    return groups


def suite_graph(
    items: Sequence[pytest.Item],
    *,
    name: str,
    executor: Executor,
    timeout: float | None = None,
    first: set[str] = frozenset(),  # type: ignore[assignment]
    groups: Sequence[Sequence[str]] = (),
    warn: Any = None,
) -> Graph:
    """The graph of ``items`` (in collection order) for the ``pytest`` executor. Each of
    ``groups`` becomes a chain (each test after the one before it, however it ended), which
    the worker pool keeps on the worker that has their fixtures set up."""
    # Here, not above: a suite that pytest's own loop runs (_serial.py) needs no graph.
    from corral._graph import build_graph
    from corral._spec import TaskSpec, TriggerRule

    previous = {later: earlier for group in groups for earlier, later in itertools.pairwise(group)}
    ids = {item.nodeid: i for i, item in enumerate(items)}
    by_base: dict[str, list[str]] = defaultdict(list)
    for nodeid in ids:
        if nodeid.endswith("]") and "[" in nodeid:
            by_base[nodeid[: nodeid.index("[")]].append(nodeid)
    specs = []
    capacity: dict[str, float] = {}
    for item in items:
        after, resources = _marks(item)
        deps: list[str] = [previous[item.nodeid]] if item.nodeid in previous else []
        for dep in after:
            found = _resolve(dep, item, ids, by_base)
            if not found and warn is not None:
                warn(f"{item.nodeid}: corral(after=[{dep!r}]) matches no collected test; "
                     "ignored")
            deps.extend(d for d in found if d != item.nodeid and d not in deps)
        for resource, amount in resources.items():
            capacity[resource] = max(capacity.get(resource, 1.0), amount)
        specs.append(TaskSpec(
            id=item.nodeid, action=run_test, depends_on=tuple(deps), resources=resources,
            executor="pytest", timeout=timeout, priority=_priority(item.nodeid, first, previous),
            trigger_rule=TriggerRule.ALL_DONE if deps else TriggerRule.ALL_SUCCESS))
    return build_graph(specs, name=name, capacity=capacity, executors={"pytest": executor})


def _priority(nodeid: str, first: set[str], previous: Mapping[str, str]) -> int:
    """2: the next test of a group (it goes to the worker its group's last test just freed,
    before anything else can take that worker and tear the group's fixtures down); 1: a test
    that failed last time, with --failed-first; 0: the rest, longest first."""
    if nodeid in previous:
        return 2
    return 1 if nodeid in first else 0
