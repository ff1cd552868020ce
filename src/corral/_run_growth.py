"""How a run grows while it goes: ``for_each`` fan-outs and planners' plans.

Mixed into :class:`corral._runner.Runner`. A task that succeeds with a list a ``for_each``
task maps over (:mod:`corral._fanout`), or with a :class:`corral.Plan`
(:mod:`corral._planner`), adds tasks to the running graph: the graph is extended
(:func:`corral._graph.extend_graph`), the scheduler grows (:meth:`Scheduler.grow`), every
per-task table of the run grows with them, and listeners hear ``tasks_added``. A resume
makes the same growth before anything starts, from the values it reuses.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from corral import _fanout, _planner
from corral._errors import BrokenExecutor, ForEachError, PlanError, ValidationError
from corral._graph import Graph, extend_graph
from corral._spec import CallRef, ShellCommand, TaskSpec, TaskState, executor_names, takes_values
from corral.executors._base import ERROR, OK, Work

if TYPE_CHECKING:
    from corral._events import RunListener
    from corral._scheduler import Scheduler
    from corral.executors._base import CompletionQueue, Executor

__all__ = ["GrowingRun", "direct_action"]


def direct_action(spec: TaskSpec) -> Any:
    """What a task calls when that is known before its first dispatch; None for a command
    or a ``call:`` reference, which are resolved then."""
    return None if isinstance(spec.action, ShellCommand | CallRef) else spec.action


class GrowingRun:
    """The runner's part for growth: fan-outs (``_mapped``, ``_over``, ``_members``) and
    plans (``_plans``), and the per-task tables they extend."""

    graph: Graph
    scheduler: Scheduler
    listeners: list[RunListener]
    values: list[Any]
    errors: list[BaseException | None]
    first_start: list[float | None]
    attempt_start: list[float]
    end: list[float | None]
    current: list[Work | None]
    _given_executors: dict[str, Executor]
    _executors: dict[str, Executor]
    _executor_of: Sequence[str]
    _queue: CompletionQueue | None
    _watched: bool
    _has_refs: list[bool]
    _fns: list[Any]
    # Fan-out: each for_each task, by index, as written (in the running graph it is its
    # gather); upstream -> the for_each tasks over it; for_each task -> its instances; and
    # why a for_each task could not fan out.
    _mapped: dict[int, TaskSpec]
    _over: dict[int, list[int]]
    _members: dict[int, list[int]]
    _fan_errors: dict[int, ForEachError]
    # Plans: each planner's children, by index; executors being started for a plan.
    _plans: dict[int, list[int]]
    _tasks_pending: set[asyncio.Task[None]]

    if TYPE_CHECKING:
        async def _start_executor(self, name: str) -> Executor: ...

        def _queue_put(self, i: int, attempt: int, status: int, payload: Any) -> None: ...

    def _fan_out_at_start(
        self, graph: Graph, done: Mapping[str, Any], ranks: Sequence[float] | None
    ) -> tuple[Graph, Sequence[float] | None]:
        """The running graph: each for_each task as its gather, and those over an upstream
        that is already done (a resume reuses it) fanned out."""
        specs = list(graph.specs)
        for i, spec in self._mapped.items():
            specs[i] = _fanout.gather_spec(spec)
            self._over.setdefault(graph.index[spec.for_each or ""], []).append(i)
        graph = dataclasses.replace(graph, specs=tuple(specs))
        for u, mapped in self._over.items():
            if graph.ids[u] not in done:
                continue
            for m in mapped:
                made = self._instances(m, done[graph.ids[u]])
                if graph.ids[m] in done:  # reused whole: its reused instances still show
                    made = [s for s in made if s.id in done]
                if made:
                    before = len(graph)
                    graph = extend_graph(graph, made, {m: [s.id for s in made]},
                                         executors=self._given_executors)
                    self._members[m] = list(range(before, len(graph)))
                    if ranks is not None:
                        ranks = [*ranks, *([ranks[m]] * len(made))]
        return graph, ranks

    def _instances(self, m: int, value: Any) -> list[TaskSpec]:
        """The instances of for_each task ``m`` over ``value``; none (and ``m`` fails when
        it comes to run) when ``value`` is not a list."""
        made = _fanout.instances(self._mapped[m], value)
        if isinstance(made, ForEachError):
            self._fan_errors[m] = made
            return []
        self._members[m] = []
        return made

    def _fan_out(self, u: int, value: Any) -> None:
        """Task ``u`` succeeded with ``value``: the for_each tasks over it grow one
        instance per item, before the scheduler hears of its success."""
        for m in self._over[u]:
            if self.scheduler.state[m] is not TaskState.PENDING:
                continue  # cancelled or failed meanwhile: nothing to fan out
            made = self._instances(m, value)
            if made:
                self._members[m] = self._grow(made, {m: [s.id for s in made]})

    def _grow(self, specs: list[TaskSpec], extra_deps: dict[int, list[str]]) -> list[int]:
        """Add ``specs`` to the running graph (``extra_deps``: existing pending tasks that
        now wait for them), to the scheduler and to every per-task table; tell listeners."""
        graph = extend_graph(self.graph, specs, extra_deps, executors=self._given_executors)
        before = len(self.graph)
        self.graph = graph
        self._executor_of = graph.executors
        k = len(specs)
        self.values += [None] * k
        self.errors += [None] * k
        self.first_start += [None] * k
        self.attempt_start += [0.0] * k
        self.end += [None] * k
        self.current += [None] * k
        self._has_refs += map(takes_values, specs)
        self._fns += map(direct_action, specs)
        if any(s.heartbeat is not None for s in specs):
            self._watched = True  # from the next turn, silent attempts are looked for
        new = self.scheduler.grow(
            graph, {i: [graph.index[t] for t in ids] for i, ids in extra_deps.items()})
        assert new == list(range(before, len(graph)))
        for listener in self.listeners:
            tell = getattr(listener, "tasks_added", None)
            if tell is not None:
                tell(graph, [s.id for s in specs])
        return new

    def _plans_at_start(
        self, graph: Graph, done: Mapping[str, Any], ranks: Sequence[float] | None
    ) -> tuple[Graph, Sequence[float] | None]:
        """The plans of planners a resume reuses join the graph before anything starts
        (their children that succeeded are in ``done``)."""
        for task_id, value in done.items():
            p = graph.index.get(task_id)
            if p is None or not _planner.is_plan_data(value):
                continue
            specs = _planner.plan_specs(task_id, value)
            before = len(graph)
            graph = extend_graph(graph, specs, {d: [s.id for s in specs]
                                                for d in graph.dependents[p]},
                                 executors=self._given_executors)
            self._plans[p] = list(range(before, len(graph)))
            if ranks is not None:
                ranks = [*ranks, *([ranks[p]] * len(specs))]
        return graph, ranks

    def _planned(self, p: int, work: Work, plan: _planner.Plan) -> tuple[int, Any] | None:
        """Planner ``p`` returned ``plan``: its tasks join the run as its children, and its
        pending dependents wait for them too. Returns the outcome to go on with (success,
        with the plan as data for its value; or the failure that says why the plan cannot
        join), or None while executors the plan needs are starting (the outcome comes back
        once they have)."""
        task_id = self.graph.ids[p]
        try:
            data = plan.to_data()
            specs = _planner.plan_specs(task_id, data)
        except PlanError as exc:
            return ERROR, exc
        missing = sorted(set(executor_names(specs)) - set(self._executors))
        if missing:
            started = asyncio.ensure_future(self._start_then(missing, work, plan))
            self._tasks_pending.add(started)
            started.add_done_callback(self._tasks_pending.discard)
            return None
        pending = [d for d in self.graph.dependents[p]
                   if self.scheduler.state[d] is TaskState.PENDING]
        try:
            self._plans[p] = self._grow(specs, {d: [s.id for s in specs] for d in pending})
        except ValidationError as exc:
            error = PlanError(f"the plan of task {task_id!r} cannot join the run: " + "; ".join(
                problem.message + (f" ({problem.hint})" if problem.hint else "")
                for problem in exc.problems))
            return ERROR, error
        return OK, data

    async def _start_then(self, names: list[str], work: Work, plan: _planner.Plan) -> None:
        """Start the executors a plan needs, then hand the planner's outcome back."""
        assert self._queue is not None
        try:
            for name in names:
                await self._start_executor(name)
        except Exception as exc:  # the plan's executor cannot start: the planner fails
            error = BrokenExecutor(f"executor {name!r} could not start for the plan of "
                                   f"task {work.task_id!r}: {exc}")
            error.__cause__ = exc
            self._queue.put(work, ERROR, error)
            return
        self._queue.put(work, OK, plan)

    def _value_of(self, task_id: str) -> Any:
        """What a task that takes ``task_id``'s value receives: its value; of a planner,
        ``{id: value}`` of its plan's tasks (which have all ended by then)."""
        i = self.graph.index[task_id]
        children = self._plans.get(i)
        if children is None:
            return self.values[i]
        ids, values = self.graph.ids, self.values
        return {ids[c]: values[c] for c in children}

    def _gather(self, m: int, attempt: int) -> None:
        """For_each task ``m`` comes to run: its value is its instances' values, in order."""
        members = self._members.get(m)
        if members is None:
            error = self._fan_errors.get(m)
            if error is None:
                u = self.graph.index[self._mapped[m].for_each or ""]
                error = _fanout.not_expanded(self._mapped[m], str(self.scheduler.state[u]))
            self._queue_put(m, attempt, ERROR, error)
            return
        values = self.values
        self._queue_put(m, attempt, OK, [values[j] for j in members])
