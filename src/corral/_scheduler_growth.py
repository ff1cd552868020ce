"""How the scheduler grows with its run: tasks added while it goes (a ``for_each`` fan-out,
a planner's plan), executors started for them, and executors whose capacity changes while it
goes (a fleet under backpressure: :meth:`GrowingScheduler.resize_executor`).

Mixed into :class:`corral._scheduler.Scheduler`: still pure (no clock, no I/O), only its
per-task arrays and its ready order's keys grow. New tasks join the ready order after every
task already there, until a re-rank places them.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from corral._errors import InvalidTransition
from corral._graph import Graph
from corral._limits import BreakerBook, Gate, PoolBreakers, RateState, gate_for
from corral._spec import TaskSpec, TaskState, TriggerRule

__all__ = ["GrowingScheduler"]

PENDING = TaskState.PENDING
SUCCEEDED = TaskState.SUCCEEDED
FAILED = TaskState.FAILED
UPSTREAM_FAILED = TaskState.UPSTREAM_FAILED
CANCELLED = TaskState.CANCELLED


class GrowingScheduler:
    """The scheduler's part for growth (its fields are the scheduler's, set there)."""

    graph: Graph
    concurrency: int
    state: list[TaskState]
    attempts: list[int]
    last_beat: list[float]
    counts: dict[TaskState, int]
    resource_names: list[str]
    free: list[float]
    gate: Gate | None
    halted: bool
    stopping: bool
    _rates: RateState | None
    _breakers: BreakerBook | None
    _pools: PoolBreakers | None
    _dependents: Sequence[Sequence[int]]
    _waiting: list[int]
    _all_done: list[bool]
    _allow_failure: list[bool]
    _max_attempts: list[int]
    _heartbeat: list[float | None]
    _timers: list[tuple[float | None, float | None] | None]
    _deferred: dict[int, tuple[float | None, float | None]]
    _deferred_executors: set[str]
    _executor_slots: dict[str, int]
    _capacity: dict[str, int]
    _requests: list[tuple[tuple[int, float], ...]]
    _active: int
    _start: list[float]
    _prior: list[float | None] | None
    _ready: list[int]
    _class_key: list[int]
    _task_bits: int
    _task_mask: int
    _seq_bits: int
    _low_mask: int

    if TYPE_CHECKING:
        def _transition(self, i: int, new: TaskState) -> None: ...

        def _resolve(self, i: int, outcome: TaskState) -> None: ...

        def _make_ready(self, i: int, old: TaskState = PENDING) -> None: ...

    def limit_new_executor(self, name: str, slots: int) -> None:
        """:meth:`limit_executor` for an executor a growing run starts while it runs, for
        tasks it has not added yet (:meth:`grow` gives them its slots)."""
        if slots < 1:
            raise ValueError(f"executor {name!r} must have at least one slot, not {slots}")
        if name in self.graph.executors:
            raise InvalidTransition(f"limit_new_executor({name!r}): tasks of the run use it "
                                    "already")
        self._executor_slots[name] = len(self.free)
        self._capacity[name] = slots
        self.resource_names.append(f"slots of executor {name!r}")
        self.free.append(float(slots))

    def resize_executor(self, name: str, slots: int) -> None:
        """From now on at most ``slots`` attempts of the tasks on executor ``name`` run at
        once: its capacity changed while the run goes (a fleet under backpressure admits
        less). Attempts already running over the new number finish; none starts until fewer
        run. An executor without slots yet gets them now, as if it had had them from the
        start (its running attempts hold one each); none while ``slots`` is not under the
        run's concurrency."""
        if slots < 1:
            raise ValueError(f"executor {name!r} must have at least one slot, not {slots}")
        slot = self._executor_slots.get(name)
        if slot is None:
            if slots >= self.concurrency:
                return  # no limit: the run's concurrency is the tighter one
            slot = self._executor_slots[name] = len(self.free)
            self.resource_names.append(f"slots of executor {name!r}")
            self._capacity[name] = 0
            self.free.append(0.0)
            running = TaskState.RUNNING
            requests = self._requests
            for i, executor in enumerate(self.graph.executors):
                if executor == name:
                    requests[i] = (*requests[i], (slot, 1.0))
                    if self.state[i] is running:
                        self.free[slot] -= 1.0
        self.free[slot] += slots - self._capacity[name]
        self._capacity[name] = slots

    def grow(
        self,
        graph: Graph,
        extra_deps: dict[int, Sequence[int]] | None = None,
        *,
        done: Iterable[int] = (),
    ) -> list[int]:
        """The run grows (a ``for_each`` fan-out, a planner's plan): ``graph`` is the run's
        graph with new tasks appended (:func:`corral._graph.extend_graph`) and
        ``extra_deps`` maps existing *pending* tasks to the new tasks they now also wait for.
        New tasks in ``done`` start out succeeded (resume). The others wait for their
        dependencies as any task does; one whose dependency already ended badly ends as
        its dependents would have. They come after every task already in the ready order
        (their keys are appended to it: priority and rank do not place them). Returns the
        new tasks' indices. No clock, no I/O: only arrays grow."""
        old_n, n = len(self.state), len(graph)
        new = range(old_n, n)
        for i in extra_deps or {}:
            if self.state[i] is not PENDING:
                raise InvalidTransition(f"task {graph.ids[i]!r} is {self.state[i]}: only a "
                                        "pending task can wait for new tasks")
        self.graph = graph
        self._dependents = graph.dependents
        specs = graph.specs[old_n:]
        k = len(specs)
        self.state += [PENDING] * k
        self.attempts += [0] * k
        self._waiting += [0] * k
        self._all_done += [s.trigger_rule == TriggerRule.ALL_DONE for s in specs]
        self._allow_failure += [s.allow_failure for s in specs]
        self._max_attempts += [s.retry.retries + 1 for s in specs]
        self._heartbeat += [s.heartbeat for s in specs]
        self.last_beat += [0.0] * k
        slot = {name: r for r, name in enumerate(self.resource_names)}
        for i, s in zip(new, specs, strict=True):
            timers = ((s.timeout, s.heartbeat)
                      if s.timeout is not None or s.heartbeat is not None else None)
            executor = graph.executors[i]
            if timers is not None and executor in self._deferred_executors:
                self._deferred[i], timers = timers, None
            self._timers.append(timers)
            request = tuple((slot[r], float(a)) for r, a in s.resources.items() if a)
            if executor in self._executor_slots:
                request = (*request, (self._executor_slots[executor], 1.0))
            self._requests.append(request)
        self._grow_keys(old_n, specs)
        pools = (self._pools.names(specs, graph.executors[old_n:])
                 if self._pools is not None else [None] * k)
        if any(s.rate_limit or s.breaker is not None for s in specs) or any(pools):
            if self.gate is None:
                self.gate = gate_for(graph.specs, graph.rate_limits, graph.breakers,
                                     self._rates, self._breakers, self._pools,
                                     graph.executors)
            else:
                self.gate.extend([s.rate_limit for s in specs], [s.breaker for s in specs],
                                 pools)
        elif self.gate is not None:
            self.gate.extend([()] * k, [None] * k)
        self.counts[PENDING] += k
        self._active += k
        # What each new task waits for: pending ones count, ended ones decide at once.
        fates: list[tuple[int, TaskState]] = []
        state = self.state
        for i in new:
            fate: TaskState | None = None
            for j in graph.deps[i]:
                how = state[j]
                if j >= old_n or not how.is_final:
                    self._waiting[i] += 1
                elif not (how is SUCCEEDED or self._all_done[i] or (
                        (how is FAILED or how is UPSTREAM_FAILED) and self._allow_failure[j])):
                    fate = fate or (UPSTREAM_FAILED if how is FAILED or how is UPSTREAM_FAILED
                                    else how)
            if fate is not None:
                fates.append((i, fate))
        for i, more in (extra_deps or {}).items():
            self._waiting[i] += len(more)
        done = [i for i in done if i >= old_n]
        for i in done:
            self._transition(i, SUCCEEDED)
        for i in done:
            self._resolve(i, SUCCEEDED)
        for i, fate in fates:
            if state[i] is PENDING:
                self._transition(i, fate)
                self._resolve(i, fate)
        for i in new:
            if state[i] is not PENDING:
                continue
            if self.halted or (self.stopping and not self._all_done[i]):
                self._transition(i, CANCELLED)
                self._resolve(i, CANCELLED)
            elif self._waiting[i] == 0:
                self._make_ready(i)
        return list(new)

    def _grow_keys(self, old_n: int, specs: Sequence[TaskSpec]) -> None:
        """Ready-order keys for tasks added by :meth:`grow`: after every task already there
        (a rank class of their own, the last) until a re-rank places them. When the run has
        outgrown the keys' layout (bits for the task and for arrival numbers), every key is
        re-packed, the order kept."""
        n = len(self.state)
        self._start += [0.0] * (n - old_n)
        if self._prior is not None:  # the learner is still to be made: it will see them
            self._prior += [s.estimate for s in specs]
        old_task_bits, old_seq_bits = self._task_bits, self._seq_bits
        task_bits = max(1, (n - 1).bit_length())
        seq_bits = (n * max(self._max_attempts, default=1) + 1).bit_length()
        old_shift, shift = old_task_bits + old_seq_bits, task_bits + seq_bits
        if (task_bits, seq_bits) != (old_task_bits, old_seq_bits):
            old_mask, seq_mask = self._task_mask, (1 << old_seq_bits) - 1
            self._ready = [(k >> old_shift) << shift | ((k >> old_task_bits) & seq_mask)
                           << task_bits | (k & old_mask) for k in self._ready]
            heapq.heapify(self._ready)  # the same order: packing is monotone in each part
            self._class_key = [(c >> old_shift) << shift | i
                               for i, c in enumerate(self._class_key)]
            self._task_bits, self._task_mask = task_bits, (1 << task_bits) - 1
            self._seq_bits = seq_bits
            self._low_mask = (1 << shift) - 1
        last = max((c >> shift for c in self._class_key), default=-1) + 1
        self._class_key += [last << shift | i for i in range(old_n, n)]
