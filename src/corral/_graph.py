"""The validated graph: task specs indexed by integer, with every problem found up front.

:func:`build_graph` is the one gate between what a person wrote and what the scheduler runs.
It checks everything that can be checked without running anything and reports *every* problem
at once (duplicate ids, unknown dependencies with a "did you mean", self-dependencies, each
cycle as a path, invalid option values, resource requests that can never fit), so that a user
fixes a file in one pass. Past this point tasks are integers ``0..n-1`` and dependencies are
tuples of integers: the scheduler's hot path never sees a string or re-validates.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral._errors import Problem, ValidationError
from corral._spec import RetryPolicy, ShellCommand, TaskSpec, TriggerRule, executor_names
from corral.executors._registry import UnknownExecutor, action_kind, known_names

if TYPE_CHECKING:
    from corral.executors._base import Executor

__all__ = ["Graph", "build_graph", "default_capacity", "suggest"]


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


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to ``word``, for a "did you mean" hint."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


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

    def __len__(self) -> int:
        return len(self.specs)

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
) -> Graph:
    """Validate ``specs`` and index them; raise :class:`ValidationError` listing every problem.

    ``capacity`` adds to or overrides the machine's (:func:`default_capacity`). ``executors``
    are the run's own executors by name; other names are looked up in the registry
    (:mod:`corral.executors._registry`: the built-ins, then entry points).
    """
    problems: list[Problem] = []
    total: dict[str, float] = default_capacity()
    if capacity:
        total.update({k: float(v) for k, v in capacity.items()})

    def problem(message: str, spec: TaskSpec | None = None, hint: str | None = None) -> None:
        src_file, line = (spec.source if spec and spec.source else (file, None))
        problems.append(
            Problem(message, task=spec.id if spec else None, file=src_file, line=line, hint=hint)
        )

    index: dict[str, int] = {}
    names = executor_names(specs)
    kinds: dict[str, str | None] = {}  # executor name -> what it runs (None: unknown)
    for i, spec in enumerate(specs):
        if not isinstance(spec.id, str) or not spec.id:
            problem(f"task #{i + 1} has an empty or non-string id: {spec.id!r}", spec)
        elif spec.id in index:
            problem(f"duplicate task id {spec.id!r}", spec, hint="task ids must be unique")
        else:
            index[spec.id] = i
        _check_options(spec, total, problem)
        _check_executor(spec, names[i], kinds, executors, problem)

    n = len(specs)
    deps: list[tuple[int, ...]] = []
    for spec in specs:
        resolved: list[int] = []
        seen: set[int] = set()
        for dep in spec.depends_on:
            j = index.get(dep)
            if dep == spec.id:
                problem(f"task {spec.id!r} depends on itself", spec)
            elif j is None:
                close = suggest(dep, index)
                problem(
                    f"task {spec.id!r} depends on unknown task {dep!r}",
                    spec,
                    hint=f"did you mean {close!r}?" if close else None,
                )
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
    )


def _check_executor(
    spec: TaskSpec,
    name: str,
    kinds: dict[str, str | None],
    given: Mapping[str, Executor] | None,
    problem: Any,
) -> None:
    """Report an executor that does not exist, or cannot run this task's action."""
    if name not in kinds:
        try:
            kinds[name] = action_kind(name, given) if isinstance(name, str) else None
        except UnknownExecutor as exc:
            kinds[name] = None
            known = known_names(given)
            close = suggest(name, known)
            detail = str(exc.args[0]) if exc.args and exc.args[0] != name else None
            problem(f"task {spec.id!r}: unknown executor {name!r}"
                    + (f": {detail}" if detail else ""), spec,
                    hint=f"did you mean {close!r}?" if close else
                    f"one of {', '.join(known)}, or pass it: dag.run(executors={{{name!r}: ...}})")
            return
    kind = kinds[name]
    if kind is None:
        problem(f"task {spec.id!r}: unknown executor {name!r}", spec)
    elif kind == "commands" and not isinstance(spec.action, ShellCommand):
        problem(f"task {spec.id!r}: executor {name!r} runs commands (cmd), not functions",
                spec)
    elif kind == "callables" and isinstance(spec.action, ShellCommand):
        problem(f"task {spec.id!r}: a shell command runs on an executor of commands such as "
                f"'shell', not {name!r}", spec)


def _check_options(spec: TaskSpec, capacity: Mapping[str, float], problem: Any) -> None:
    """Report invalid option values of one task."""
    retry: object = spec.retry  # typed, but a caller may have put anything there
    if not isinstance(retry, RetryPolicy):
        problem(f"task {spec.id!r}: retry must be a RetryPolicy, not {retry!r}", spec)
    else:
        if not _is_int(retry.retries) or retry.retries < 0:
            problem(f"task {spec.id!r}: retries must be a whole number >= 0, not {retry.retries!r}",
                    spec)
        for field_name in ("delay", "max_delay"):
            value = getattr(retry, field_name)
            if not _is_number(value) or value < 0:
                problem(f"task {spec.id!r}: retry {field_name} must be a number >= 0, "
                        f"not {value!r}", spec)
        if not _is_number(retry.backoff) or retry.backoff < 1:
            problem(f"task {spec.id!r}: retry backoff must be a number >= 1, "
                    f"not {retry.backoff!r}", spec)
        if not _is_number(retry.jitter) or not 0 <= retry.jitter <= 1:
            problem(f"task {spec.id!r}: retry jitter must be between 0 and 1, "
                    f"not {retry.jitter!r}", spec)
    if spec.timeout is not None and (not _is_number(spec.timeout) or spec.timeout <= 0):
        problem(f"task {spec.id!r}: timeout must be a number of seconds > 0, "
                f"not {spec.timeout!r}", spec)
    if spec.heartbeat is not None and (not _is_number(spec.heartbeat) or spec.heartbeat <= 0):
        problem(f"task {spec.id!r}: heartbeat must be a number of seconds > 0, "
                f"not {spec.heartbeat!r}", spec)
    if spec.estimate is not None and (not _is_number(spec.estimate) or spec.estimate < 0):
        problem(f"task {spec.id!r}: estimate must be a number of seconds >= 0, "
                f"not {spec.estimate!r}", spec)
    if not _is_int(spec.priority):
        problem(f"task {spec.id!r}: priority must be a whole number, not {spec.priority!r}", spec)
    trigger: object = spec.trigger_rule
    if not isinstance(trigger, TriggerRule):
        try:
            TriggerRule(str(trigger))
        except ValueError:
            close = suggest(str(trigger), [r.value for r in TriggerRule])
            problem(f"task {spec.id!r}: unknown trigger_rule {trigger!r}", spec,
                    hint=f"did you mean {close!r}?" if close else
                    f"one of {', '.join(r.value for r in TriggerRule)}")
    env: Mapping[Any, object] = spec.env
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            problem(f"task {spec.id!r}: env {key!r} must map a string to a string, "
                    f"not {value!r}", spec)
    for name, amount in spec.resources.items():
        if not _is_number(amount) or amount < 0:
            problem(f"task {spec.id!r}: resource {name!r} must be a number >= 0, not {amount!r}",
                    spec)
        elif name not in capacity:
            close = _resource_typo(name, capacity)
            problem(
                f"task {spec.id!r} requests resource {name!r}, which has no capacity",
                spec,
                hint=f"did you mean {close!r}?" if close else
                f"declare its capacity: {_declare(name, amount)}",
            )
        elif amount > capacity[name]:
            problem(
                f"task {spec.id!r} requests {name}={amount:g} but the capacity is "
                f"{capacity[name]:g}, so it could never run",
                spec,
                hint=f"ask for less, or raise the capacity: {_declare(name, amount)}",
            )


def _resource_typo(name: str, capacity: Mapping[str, float]) -> str | None:
    """The resource ``name`` is most likely a misspelling of, if any. Stricter than
    :func:`suggest`: resource names are short, and ``gpu`` is one letter from ``cpu`` without
    being a typo of it (``cpus``, ``memory`` and ``gppu`` still are)."""
    matches = difflib.get_close_matches(name, list(capacity), n=1, cutoff=0.8)
    return matches[0] if matches else None


def _declare(name: str, amount: float) -> str:
    """How to declare a capacity, in both front ends."""
    return (f"resources: {{{name}: {amount:g}}} at the top of the pipeline file, or "
            f"DAG(resources={{{name!r}: {amount:g}}})")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
