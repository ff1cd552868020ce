"""The validated graph: task specs indexed by integer, with every problem found up front.

:func:`build_graph` is the one gate between what a person wrote and what the scheduler runs.
It checks everything that can be checked without running anything and reports *every* problem
at once (duplicate ids, unknown dependencies with a "did you mean", self-dependencies, each
cycle as a path, invalid option values, resource requests that can never fit), so that a user
fixes a file in one pass. Past this point tasks are integers ``0..n-1`` and dependencies are
tuples of integers: the scheduler's hot path never sees a string or re-validates.

Every number must be finite (NaN and infinities are refused: a NaN timeout never fires, a NaN
capacity admits nothing). Checking is linear in the number of tasks, and so is "did you mean"
(:class:`corral._words.Suggester`: a file of 20,000 tasks that each name an unknown dependency
is reported at once, not after minutes of fuzzy matching). Messages quote values through
:func:`corral._words.short_repr`, never in full.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral._errors import Problem, ValidationError
from corral._limits import (
    Breaker,
    RateLimit,
    declared,
    names_of,
    parse_breaker,
    parse_rate_limit,
    queue_breakers,
)
from corral._spec import RetryPolicy, ShellCommand, TaskSpec, TriggerRule, executor_names
from corral._words import Suggester, short_repr
from corral.executors._registry import UnknownExecutor, action_kind, known_names

if TYPE_CHECKING:
    from corral.executors._base import Executor

__all__ = ["Graph", "build_graph", "default_capacity", "extend_graph"]


def default_capacity() -> dict[str, float]:
    """The machine's capacity: its CPU count and its physical memory in MiB."""
    capacity: dict[str, float] = {"cpu": float(os.cpu_count() or 1)}
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
        capacity["memory_mb"] = float(pages * page_size // (1024 * 1024))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        pass
    return capacity


@dataclass(frozen=True, slots=True, eq=False)
class Graph:
    """A validated DAG. Tasks are ``0..n-1`` in definition order.

    ``order`` is a topological order; ``deps[i]`` and ``dependents[i]`` are tuples of
    indices; ``capacity`` is the total of every resource tasks may request; ``executors[i]``
    is the name of the executor task ``i`` runs on (given, or chosen from its action).
    """

    name: str
    specs: tuple[TaskSpec, ...]
    ids: tuple[str, ...]
    index: Mapping[str, int]
    deps: tuple[tuple[int, ...], ...]
    dependents: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]
    capacity: Mapping[str, float]
    executors: tuple[str, ...]
    # Flow control, by name (corral._limits): declared rate limits and circuit breakers.
    rate_limits: Mapping[str, RateLimit] = field(default_factory=dict)
    breakers: Mapping[str, Breaker] = field(default_factory=dict)
    # The fleet: each queue's balancing strategy (corral.fleet._balance; absent: pull), and
    # the pool breakers queues set (corral._limits.queue_breakers; None: that queue has none).
    balance: Mapping[str, str] = field(default_factory=dict)
    pool_breakers: Mapping[str, Breaker | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.specs)

    def queues(self) -> dict[str, dict[str, Any]]:
        """The queues' declarations this graph was built from (for a graph built again)."""
        out: dict[str, dict[str, Any]] = {q: {"strategy": s} for q, s in self.balance.items()}
        for queue, breaker in self.pool_breakers.items():
            out.setdefault(queue, {})["breaker"] = False if breaker is None else breaker
        return out

    def upstream_closure(self, targets: Iterable[str]) -> set[int]:
        """The given tasks and everything they depend on, transitively."""
        seen: set[int] = set()
        stack = [self.index[t] for t in targets]
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            stack.extend(self.deps[i])
        return seen

    def downstream_closure(self, roots: Iterable[int]) -> set[int]:
        """The given tasks and everything that depends on them, transitively."""
        seen: set[int] = set()
        stack = list(roots)
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            stack.extend(self.dependents[i])
        return seen


def build_graph(
    specs: Sequence[TaskSpec],
    *,
    name: str = "dag",
    capacity: Mapping[str, float] | None = None,
    file: str | None = None,
    executors: Mapping[str, Executor] | None = None,
    rate_limits: Mapping[str, Any] | None = None,
    breakers: Mapping[str, Any] | None = None,
    queues: Mapping[str, Any] | None = None,
) -> Graph:
    """Validate ``specs`` and index them; raise :class:`ValidationError` listing every problem.

    ``capacity`` adds to or overrides the machine's (:func:`default_capacity`). ``executors``
    are the run's own executors by name; other names are looked up in the registry
    (:mod:`corral.executors._registry`: the built-ins, then entry points). ``rate_limits``
    and ``breakers`` are the declarations tasks name in their ``rate_limit`` and ``breaker``
    options (:func:`corral._limits.parse_rate_limit`, :func:`~corral._limits.parse_breaker`).
    ``queues`` declares the fleet's queues' balancing strategies
    (:func:`corral.fleet._balance.parse_queues`) and pool breakers
    (:func:`corral._limits.queue_breakers`).
    """
    problems: list[Problem] = []

    def problem(message: str, spec: TaskSpec | None = None, hint: str | None = None) -> None:
        src_file, line = (spec.source if spec and spec.source else (file, None))
        problems.append(
            Problem(message, task=spec.id if spec else None, file=src_file, line=line, hint=hint)
        )

    total: dict[str, float] = default_capacity()
    for resource, amount in (capacity or {}).items():
        if not _finite(amount) or amount < 0:
            problem(f"the capacity of resource {short_repr(resource)} must be a finite number "
                    f">= 0, not {short_repr(amount)}")
        else:
            total[resource] = float(amount)

    limits, bad = declared(rate_limits, parse_rate_limit, "rate limit")
    breaker_decls, bad_breakers = declared(breakers, parse_breaker, "circuit breaker")
    for message in (*bad, *bad_breakers):
        problem(message)
    from corral.fleet._balance import parse_queues

    balance, bad_queues = parse_queues(queues)
    for message, hint in bad_queues:
        problem(message, hint=hint)
    pool_breakers, bad_pools = queue_breakers(queues)
    for message in bad_pools:
        problem(message)

    index: dict[str, int] = {}
    checks = _Checks(total, executors, limits, breaker_decls)
    names = executor_names(specs)
    for i, spec in enumerate(specs):
        if not isinstance(spec.id, str) or not spec.id:
            problem(f"task #{i + 1} has an empty or non-string id: {short_repr(spec.id)}", spec)
        elif spec.id in index:
            problem(f"duplicate task id {spec.id!r}", spec, hint="task ids must be unique")
        else:
            index[spec.id] = i
        checks.options(spec, problem)
        checks.executor(spec, names[i], problem)

    n = len(specs)
    deps: list[tuple[int, ...]] = []
    known: Suggester | None = None
    for spec in specs:
        depends = spec.depends_on
        if not depends:
            deps.append(())
            continue
        try:  # the common case: every dependency known, none twice, not itself
            fast = tuple([index[dep] for dep in depends])
        except (KeyError, TypeError):
            fast = None
        if fast is not None and spec.id not in depends and len(set(fast)) == len(fast):
            deps.append(fast)
            continue
        resolved: list[int] = []
        seen: set[int] = set()
        for dep in depends:
            j = index.get(dep)
            if dep == spec.id:
                if dep != spec.for_each:  # (reported as a for_each problem)
                    problem(f"task {spec.id!r} depends on itself", spec)
            elif j is None:
                known = known or Suggester(index)
                what = "for_each over" if dep == spec.for_each else "depends on"
                problem(f"task {spec.id!r} {what} unknown task {short_repr(dep)}", spec,
                        hint=known.hint(dep))
            elif j not in seen:
                seen.add(j)
                resolved.append(j)
        deps.append(tuple(resolved))
    if len(deps) != n:  # pragma: no cover - defensive
        raise AssertionError("dependency table out of step with specs")

    dependents_lists: list[list[int]] = [[] for _ in range(n)]
    for i, ds in enumerate(deps):
        for j in ds:
            dependents_lists[j].append(i)
    dependents = tuple(tuple(d) for d in dependents_lists)

    order = _topological_order(deps, dependents)
    if len(order) < n:
        for cycle in _cycles(deps, set(range(n)) - set(order)):
            path = " -> ".join(specs[i].id for i in [*cycle, cycle[0]])
            problem(f"cycle: {path}", specs[cycle[0]])

    if problems:
        raise ValidationError(problems)
    return Graph(
        name=name,
        specs=tuple(specs),
        ids=tuple(s.id for s in specs),
        index=index,
        deps=tuple(deps),
        dependents=dependents,
        order=tuple(order),
        capacity=total,
        executors=tuple(names),
        rate_limits=limits,
        breakers=breaker_decls,
        balance=balance,
        pool_breakers=pool_breakers,
    )


def extend_graph(
    graph: Graph,
    specs: Sequence[TaskSpec],
    extra_deps: Mapping[int, Sequence[str]] | None = None,
    *,
    executors: Mapping[str, Executor] | None = None,
) -> Graph:
    """``graph`` with ``specs`` appended (tasks ``len(graph)..``), checked as
    :func:`build_graph` checks a graph, and ``extra_deps`` (task index -> ids) added to the
    dependencies of existing tasks: the graph of a run that grows while it runs (a
    ``for_each`` fan-out, a planner's plan). New tasks may depend on existing tasks and on
    each other; an id that is already taken, an unknown dependency or a cycle raises
    :class:`ValidationError` naming every problem, and ``graph`` is left as it was."""
    problems: list[Problem] = []

    def problem(message: str, spec: TaskSpec | None = None, hint: str | None = None) -> None:
        problems.append(Problem(message, task=spec.id if spec else None, hint=hint))

    n = len(graph)
    index = dict(graph.index)
    checks = _Checks(dict(graph.capacity), executors, graph.rate_limits, graph.breakers)
    names = executor_names(specs)
    for k, spec in enumerate(specs):
        if not isinstance(spec.id, str) or not spec.id:
            problem(f"a new task has an empty or non-string id: {short_repr(spec.id)}", spec)
        elif spec.id in index:
            problem(f"duplicate task id {spec.id!r}", spec,
                    hint="the run already has a task of that id")
        else:
            index[spec.id] = n + k
        checks.options(spec, problem)
        checks.executor(spec, names[k], problem)
    known: Suggester | None = None

    def resolve(task: str, depends: Iterable[str]) -> tuple[int, ...]:
        nonlocal known
        out: list[int] = []
        for dep in depends:
            j = index.get(dep)
            if j is None:
                known = known or Suggester(index)
                problem(f"task {task!r} depends on unknown task {short_repr(dep)}",
                        hint=known.hint(dep))
            elif dep == task:
                problem(f"task {task!r} depends on itself")
            elif j not in out:
                out.append(j)
        return tuple(out)

    deps = list(graph.deps)
    deps += [resolve(spec.id, spec.depends_on) for spec in specs]
    for i, more in (extra_deps or {}).items():
        deps[i] = (*deps[i], *(j for j in resolve(graph.ids[i], more) if j not in deps[i]))
    if problems:
        raise ValidationError(problems)
    dependents_lists = [list(d) for d in graph.dependents] + [[] for _ in specs]
    for i in (*range(n, n + len(specs)), *(extra_deps or {})):
        for j in deps[i]:
            if i not in dependents_lists[j]:
                dependents_lists[j].append(i)
    dependents = tuple(tuple(d) for d in dependents_lists)
    order = _topological_order(deps, dependents)
    if len(order) < len(deps):
        for cycle in _cycles(deps, set(range(len(deps))) - set(order)):
            ids = [*graph.ids, *(s.id for s in specs)]
            problems.append(Problem("cycle: " + " -> ".join(ids[i] for i in [*cycle, cycle[0]])))
        raise ValidationError(problems)
    return Graph(
        name=graph.name,
        specs=(*graph.specs, *specs),
        ids=(*graph.ids, *(s.id for s in specs)),
        index=index,
        deps=tuple(deps),
        dependents=dependents,
        order=tuple(order),
        capacity=graph.capacity,
        executors=(*graph.executors, *names),
        rate_limits=graph.rate_limits,
        breakers=graph.breakers,
        balance=graph.balance,
        pool_breakers=graph.pool_breakers,
    )


class _Checks:
    """The option checks of :func:`build_graph`, one task at a time.

    Most tasks of a large DAG share their retry policy and action, so a policy already found
    valid (by identity: the specs keep them alive) and each action's executor are not looked
    at again, and options left at their defaults cost one comparison each.
    """

    def __init__(
        self,
        capacity: Mapping[str, float],
        given: Mapping[str, Executor] | None = None,
        rate_limits: Mapping[str, RateLimit] | None = None,
        breakers: Mapping[str, Breaker] | None = None,
    ) -> None:
        self.capacity = capacity
        self.rate_limits = set(rate_limits or {})
        self.breakers = set(breakers or {})
        self.valid_retry: set[int] = set()
        self.given = given
        self.kinds: dict[str, str | None] = {}  # executor name -> what it runs (None: unknown)
        # Stricter than other names: resource names are short, and gpu is one letter from cpu
        # without being a typo of it (cpus, memory and gppu still are).
        self.resource_names = Suggester(capacity, cutoff=0.8)
        self.rules = [r.value for r in TriggerRule]

    def executor(self, spec: TaskSpec, name: str, problem: Any) -> None:
        """Report an executor that does not exist, or cannot run ``spec``'s action. Each name
        is looked up once (the registry, then entry points)."""
        kinds = self.kinds
        if name not in kinds:
            try:
                kinds[name] = action_kind(name, self.given) if isinstance(name, str) else None
            except UnknownExecutor as exc:
                kinds[name] = None
                known = known_names(self.given)
                detail = str(exc.args[0]) if exc.args and exc.args[0] != name else None
                problem(f"task {spec.id!r}: unknown executor {short_repr(name)}"
                        + (f": {detail}" if detail else ""), spec,
                        hint=Suggester(known).hint(
                            str(name), f"one of {', '.join(known)}, or pass it: "
                            f"dag.run(executors={{{name!r}: ...}})"))
                return
        kind = kinds[name]
        if kind is None:
            problem(f"task {spec.id!r}: unknown executor {short_repr(name)}", spec)
        elif kind == "commands" and not isinstance(spec.action, ShellCommand):
            problem(f"task {spec.id!r}: executor {name!r} runs commands (cmd), not functions",
                    spec)
        elif kind == "callables" and isinstance(spec.action, ShellCommand):
            problem(f"task {spec.id!r}: a shell command runs on an executor of commands such as "
                    f"'shell', not {name!r}", spec)

    def options(self, spec: TaskSpec, problem: Any) -> None:
        """Report the invalid option values of ``spec``."""
        task = f"task {spec.id!r}"
        retry: object = spec.retry  # typed, but a caller may have put anything there
        if id(retry) not in self.valid_retry and self.retry(retry, task, spec, problem):
            self.valid_retry.add(id(retry))
        if spec.timeout is not None or spec.heartbeat is not None:
            for name in ("timeout", "heartbeat"):
                value = getattr(spec, name)
                if value is not None and not (_finite(value) and value > 0):
                    problem(f"{task}: {name} must be a finite number of seconds > 0, "
                            f"not {short_repr(value)}", spec)
        estimate = spec.estimate
        if estimate is not None and not (_finite(estimate) and estimate >= 0):
            problem(f"{task}: estimate must be a finite number of seconds >= 0, "
                    f"not {short_repr(estimate)}", spec)
        if type(spec.priority) is not int and not _is_int(spec.priority):
            problem(f"{task}: priority must be a whole number, not {short_repr(spec.priority)}",
                    spec)
        trigger: object = spec.trigger_rule
        if not isinstance(trigger, TriggerRule):
            try:
                TriggerRule(str(trigger))
            except ValueError:
                problem(f"{task}: unknown trigger_rule {short_repr(trigger)}", spec,
                        hint=Suggester(self.rules).hint(str(trigger),
                                                         f"one of {', '.join(self.rules)}"))
        env: Mapping[Any, object] = spec.env
        if env:
            for key, value in env.items():
                if not isinstance(key, str) or not isinstance(value, str):
                    problem(f"{task}: env {short_repr(key)} must map a string to a string, "
                            f"not {short_repr(value)}", spec)
        if spec.resources:
            self.resources(spec, task, problem)
        if spec.rate_limit or spec.breaker is not None:
            self.flow_control(spec, task, problem)
        if spec.for_each is not None:
            if not isinstance(spec.for_each, str) or not spec.for_each:
                problem(f"{task}: for_each must be a task id, not {short_repr(spec.for_each)}",
                        spec)
            elif spec.for_each == spec.id:
                problem(f"{task}: for_each names the task itself", spec)

    def flow_control(self, spec: TaskSpec, task: str, problem: Any) -> None:
        """Report ``rate_limit`` and ``breaker`` options that name nothing declared."""
        names = names_of(spec.rate_limit)
        if names is None:
            problem(f"{task}: rate_limit must be a name or a list of names, "
                    f"not {short_repr(spec.rate_limit)}", spec)
        for name in names or ():
            if name not in self.rate_limits:
                problem(f"{task}: unknown rate limit {short_repr(name)}", spec,
                        hint=Suggester(self.rate_limits).hint(name, "declare it: rate_limits: "
                                                   f"{{{name}: 10/s}} at the top of the pipeline "
                                                   f"file, or DAG(rate_limits=...)"))
        breaker: object = spec.breaker
        if breaker is not None and (not isinstance(breaker, str)
                                    or breaker not in self.breakers):
            declare = (f"declare it: circuit_breakers: {{{breaker}: {{failures: 5}}}} at the top "
                       "of the pipeline file, or DAG(circuit_breakers=...)")
            problem(f"{task}: unknown circuit breaker {short_repr(breaker)}", spec,
                    hint=Suggester(self.breakers).hint(str(breaker), declare))

    def retry(self, retry: object, task: str, spec: TaskSpec, problem: Any) -> bool:
        """Report an invalid retry policy; whether it was valid."""
        if not isinstance(retry, RetryPolicy):
            problem(f"{task}: retry must be a RetryPolicy, not {short_repr(retry)}", spec)
            return False
        bad = 0
        if not _is_int(retry.retries) or retry.retries < 0:
            problem(f"{task}: retries must be a whole number >= 0, "
                    f"not {short_repr(retry.retries)}", spec)
            bad += 1
        for field_name in ("delay", "max_delay"):
            value = getattr(retry, field_name)
            if not _finite(value) or value < 0:
                problem(f"{task}: retry {field_name} must be a finite number >= 0, "
                        f"not {short_repr(value)}", spec)
                bad += 1
        if not _finite(retry.backoff) or retry.backoff < 1:
            problem(f"{task}: retry backoff must be a finite number >= 1, "
                    f"not {short_repr(retry.backoff)}", spec)
            bad += 1
        if not _finite(retry.jitter) or not 0 <= retry.jitter <= 1:
            problem(f"{task}: retry jitter must be between 0 and 1, "
                    f"not {short_repr(retry.jitter)}", spec)
            bad += 1
        return bad == 0

    def resources(self, spec: TaskSpec, task: str, problem: Any) -> None:
        capacity = self.capacity
        for name, amount in spec.resources.items():
            if not _finite(amount) or amount < 0:
                problem(f"{task}: resource {short_repr(name)} must be a finite number >= 0, "
                        f"not {short_repr(amount)}", spec)
            elif name not in capacity:
                problem(
                    f"{task} requests resource {short_repr(name)}, which has no capacity",
                    spec,
                    hint=self.resource_names.hint(
                        name, f"declare its capacity: {_declare(name, amount)}"),
                )
            elif amount > capacity[name]:
                problem(
                    f"{task} requests {name}={amount:g} but the capacity is "
                    f"{capacity[name]:g}, so it could never run",
                    spec,
                    hint=f"ask for less, or raise the capacity: {_declare(name, amount)}",
                )


def _finite(value: object) -> bool:
    """A real number (not a bool) that fits a float and is neither NaN nor infinite."""
    if type(value) is float:
        return math.isfinite(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return math.isfinite(float(value))
        except OverflowError:  # an int too large for a float
            return False
    return False


def _declare(name: str, amount: float) -> str:
    """How to declare a capacity, in both front ends."""
    return (f"resources: {{{short_repr(name, quote=False)}: {amount:g}}} at the top of the "
            f"pipeline file, or DAG(resources={{{short_repr(name)}: {amount:g}}})")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _topological_order(
    deps: Sequence[tuple[int, ...]], dependents: Sequence[tuple[int, ...]]
) -> list[int]:
    """Kahn's algorithm; tasks on or behind a cycle are left out."""
    waiting = [len(d) for d in deps]
    order = [i for i, w in enumerate(waiting) if w == 0]
    k = 0
    while k < len(order):
        for j in dependents[order[k]]:
            waiting[j] -= 1
            if waiting[j] == 0:
                order.append(j)
        k += 1
    return order


def _cycles(deps: Sequence[tuple[int, ...]], candidates: set[int]) -> list[list[int]]:
    """One cycle per strongly connected component among ``candidates`` (Tarjan, iterative)."""
    index_of: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    components: list[list[int]] = []
    counter = 0
    for root in sorted(candidates):
        if root in index_of:
            continue
        work = [(root, iter(deps[root]))]
        index_of[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in candidates:
                    continue
                if nxt not in index_of:
                    index_of[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(deps[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index_of[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_cycle_in(deps, set(c)) for c in components]


def _cycle_in(deps: Sequence[tuple[int, ...]], component: set[int]) -> list[int]:
    """A simple cycle inside one strongly connected component, in execution order.

    Printed as ``a -> b``, as edges are everywhere in corral: ``b`` depends on ``a``.
    """
    start = min(component)
    parent: dict[int, int] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for dep in deps[node]:
                if dep not in component:
                    continue
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    # path runs start <- ... <- node along "depends on"; rotate start first.
                    return [start, *path[:-1]]
                if dep not in seen:
                    seen.add(dep)
                    parent[dep] = node
                    nxt_frontier.append(dep)
        frontier = nxt_frontier
    raise AssertionError("a strongly connected component without a cycle")  # pragma: no cover
