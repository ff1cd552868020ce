"""The Python API: build a DAG from plain functions and run it.

::

    dag = corral.DAG("etl")

    @dag.task(retries=2)
    def extract() -> list[int]: ...

    @dag.task
    def load(rows: list[int]) -> int: ...

    load(extract())            # calling a task adds it; passing a result adds the dependency
    result = dag.run()
    result["load"].value

Calling a decorated function does not run it: it adds a task to the DAG and returns a
:class:`Task` handle. Passing handles as arguments passes the upstream task's return value at
run time and makes it a dependency. ``depends_on=`` and ``a >> b`` add ordering without data.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from corral._errors import ValidationError
from corral._graph import Graph, build_graph
from corral._options import TASK_OPTIONS, check_option_names, make_spec
from corral._plan import Plan, make_plan
from corral._spec import CallRef, ShellCommand, TaskRef, TaskSpec, refs_in
from corral._words import short_repr

if TYPE_CHECKING:
    from corral._events import RunListener
    from corral._result import RunResult
    from corral.executors._base import Executor
    from corral.store import Resume, Store

__all__ = ["DAG", "Task", "TaskFunction"]

P = ParamSpec("P")
R = TypeVar("R")


class Task:
    """A handle on a task in a DAG: pass it as an argument to use its return value."""

    __slots__ = ("dag", "id")

    def __init__(self, dag: DAG, task_id: str) -> None:
        self.dag = dag
        self.id = task_id

    def after(self, *others: Task | str) -> Task:
        """Make this task wait for ``others`` (no data passed)."""
        self.dag._add_deps(self.id, [o.id if isinstance(o, Task) else o for o in others])
        return self

    def __rshift__(self, other: Task | Sequence[Task]) -> Task | Sequence[Task]:
        """``a >> b``: ``b`` runs after ``a``. Returns ``b`` so chains read left to right."""
        targets = [other] if isinstance(other, Task) else list(other)
        for t in targets:
            t.after(self)
        return other

    def __rrshift__(self, other: Sequence[Task]) -> Task:
        """``[a, b] >> c``."""
        return self.after(*other)

    def __repr__(self) -> str:
        return f"<Task {self.id!r}>"


class TaskFunction(Generic[P, R]):
    """A function registered with a DAG; calling it adds a task and returns its handle."""

    def __init__(self, dag: DAG, fn: Callable[P, R], options: Mapping[str, Any]) -> None:
        self.dag = dag
        self.fn = fn
        self.task_options = dict(options)
        functools.update_wrapper(self, fn)

    def options(self, **options: Any) -> TaskFunction[P, R]:
        """The same function with some options changed (``id=`` names the next task)."""
        return TaskFunction(self.dag, self.fn, {**self.task_options, **options})

    def map(self, over: Task | str, *args: Any, **kwargs: Any) -> Task:
        """One task per item of the list ``over`` returns (``for_each``): the function is
        called with the item first, then ``args`` and ``kwargs``."""
        return self.options(for_each=over)(*args, **kwargs)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Task:
        options = dict(self.task_options)
        task_id = options.pop("id", None)
        # Every keyword here is the function's own, whatever its name (options were given to
        # @dag.task or .options()): no check for task option names, unlike DAG.add.
        return self.dag._add(self.fn, args, kwargs, task_id, options)


class DAG:
    """A set of tasks and their dependencies, built in Python.

    ``resources`` declares capacity beyond the machine's CPUs and memory (``{"gpu": 1}``);
    ``defaults`` are options every task gets unless it says otherwise; ``env`` is added to the
    environment of shell tasks. ``rate_limits`` (``{"api": "10/s", "llm": {"rate": "60/m",
    "burst": 5}}``) and ``circuit_breakers`` (``{"payments": {"failures": 5, "reset": 30}}``)
    are declared here and named by tasks' ``rate_limit`` and ``breaker`` options. ``queues``
    (``{"gpu": {"strategy": "least_loaded"}}``) chooses how the fleet spreads a queue's
    attempts over its workers (docs/fleet.md, "Load balancing").
    """

    def __init__(
        self,
        name: str = "dag",
        *,
        concurrency: int | None = None,
        resources: Mapping[str, float] | None = None,
        defaults: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        rate_limits: Mapping[str, Any] | None = None,
        circuit_breakers: Mapping[str, Any] | None = None,
        queues: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        if concurrency is not None and (not isinstance(concurrency, int)
                                        or isinstance(concurrency, bool) or concurrency < 1):
            raise ValidationError(f"concurrency must be a whole number >= 1, "
                                  f"not {short_repr(concurrency)}")
        self.concurrency = concurrency
        self.resources = dict(resources or {})
        self.defaults = dict(defaults or {})
        problems = check_option_names(self.defaults, where="defaults")
        if problems:
            raise ValidationError(problems)
        self.env = dict(env or {})
        self.rate_limits = dict(rate_limits or {})
        self.circuit_breakers = dict(circuit_breakers or {})
        self.queues = dict(queues or {})
        self._specs: dict[str, TaskSpec] = {}
        self._order: list[str] = []
        self._duplicates: list[TaskSpec] = []
        self._counter: dict[str, int] = {}
        self._changes = 0  # tasks added or changed, so that validate() knows its graph is current
        self._graph: tuple[Any, Graph] | None = None  # (what it was built from, the graph)

    # ------------------------------------------------------------------ building
    def task(self, fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
        """Decorator: ``@dag.task`` or ``@dag.task(retries=2, executor="process")``."""
        if options:
            problems = check_option_names(options, where="@task", extra=("id",))
            if problems:
                raise ValidationError(problems)

        def wrap(f: Callable[P, R]) -> TaskFunction[P, R]:
            return TaskFunction(self, f, options)

        return wrap(fn) if fn is not None else wrap

    def add(
        self,
        action: Callable[..., Any] | str,
        /,
        *args: Any,
        id: str | None = None,
        options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Task:
        """Add a task running ``action`` (a function, or a ``"module:function"`` string) with
        these arguments; :class:`Task` handles among them become dependencies.

        Task options go in ``options={...}``. A keyword argument named like a task option
        (``depends_on=``, ``retries=``, ...) is refused with a ``TypeError`` rather than
        passed to the function, where it would silently do nothing a task option does; to give
        the function an argument of that name, decorate it with ``@dag.task`` and call it.

        ``for_each=task`` (a :class:`Task` or an id; the one option also taken as a keyword)
        runs one instance of ``action`` per item of the list ``task`` returns, the item first
        among the arguments: ``dag.add(fetch, for_each=urls)``.
        """
        if "for_each" in kwargs:
            options = {**(options or {}), "for_each": kwargs.pop("for_each")}
        clash = [k for k in kwargs if k in TASK_OPTIONS]
        if clash:
            given = ", ".join(f"{k!r}: {kwargs[k]!r}" for k in clash)
            raise TypeError(
                f"dag.add(): {clash[0]!r} is a task option, not an argument of the function: "
                f"pass options={{{given}}} (a function argument of that name: decorate the "
                "function with @dag.task and call it)"
                if len(clash) == 1 else
                f"dag.add(): {', '.join(map(repr, clash))} are task options, not arguments of "
                f"the function: pass options={{{given}}} (function arguments of those names: "
                "decorate the function with @dag.task and call it)")
        return self._add(action, args, kwargs, id, options)

    def _add(
        self,
        action: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        id: str | None,
        options: Mapping[str, Any] | None,
    ) -> Task:
        if isinstance(action, str):
            act: Any = CallRef(action)
            base = action.rpartition(":")[2].rpartition(".")[2]
        else:
            act = action
            base = getattr(action, "__name__", "task")
        task_id = id if id is not None else self._fresh_id(base)
        args_r = tuple(_to_ref(a) for a in args)
        kwargs_r = {k: _to_ref(v) for k, v in kwargs.items()}
        options = dict(options or {})
        if isinstance(options.get("for_each"), Task):
            options["for_each"] = options["for_each"].id
        depends = list(_as_ids(options.pop("depends_on", ())))
        depends += [r for r in refs_in((args_r, kwargs_r)) if r not in depends]
        options["depends_on"] = depends
        spec = make_spec(task_id, act, args=args_r, kwargs=kwargs_r, options=options,
                         defaults=self.defaults, source=_source_of(action))
        self._put(spec)
        return Task(self, task_id)

    def shell(self, task_id: str, cmd: str, **options: Any) -> Task:
        """Add a shell-command task."""
        options["depends_on"] = list(_as_ids(options.get("depends_on", ())))
        self._put(make_spec(task_id, ShellCommand(cmd), options=options, defaults=self.defaults))
        return Task(self, task_id)

    def replace_spec(self, spec: TaskSpec) -> None:
        """Put ``spec`` in place of the task of the same id (which must exist)."""
        if spec.id not in self._specs:
            raise KeyError(spec.id)
        self._changes += 1
        self._specs[spec.id] = spec

    def add_spec(self, spec: TaskSpec) -> Task:
        """Add a ready-made :class:`TaskSpec` (what pipeline files and the API use)."""
        self._put(spec)
        return Task(self, spec.id)

    def __getitem__(self, task_id: str) -> Task:
        if task_id not in self._specs:
            raise KeyError(task_id)
        return Task(self, task_id)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._specs

    @property
    def specs(self) -> list[TaskSpec]:
        return [self._specs[t] for t in self._order] + self._duplicates

    def _put(self, spec: TaskSpec) -> None:
        self._changes += 1
        if spec.id in self._specs:
            self._duplicates.append(spec)  # reported by validate(), with every other problem
            return
        self._specs[spec.id] = spec
        self._order.append(spec.id)

    def _fresh_id(self, base: str) -> str:
        if base not in self._specs:
            return base
        n = self._counter.get(base, 1)
        while f"{base}-{n + 1}" in self._specs:
            n += 1
        self._counter[base] = n + 1
        return f"{base}-{n + 1}"

    def _add_deps(self, task_id: str, deps: Iterable[str]) -> None:
        self._changes += 1
        spec = self._specs[task_id]
        new = [d for d in deps if d not in spec.depends_on]
        self._specs[task_id] = spec.evolve(depends_on=(*spec.depends_on, *new))

    # ------------------------------------------------------------------ using
    def validate(
        self,
        *,
        only: Iterable[str] | None = None,
        executors: Mapping[str, Executor] | None = None,
    ) -> Graph:
        """Check the DAG and index it; raises :class:`ValidationError` listing every problem.

        ``only`` keeps just those tasks and everything they depend on. ``executors`` are the
        executors a run will be given by name (``run(executors=...)``): tasks may name them.
        """
        # The graph of unchanged tasks, name, capacity and executors is the same: build it
        # once (a pipeline is validated when it is read, then by every command that uses it).
        given = tuple(sorted((k, type(v).runs) for k, v in executors.items())) if executors \
            else ()
        built_from = (self._changes, self.name, dict(self.resources), given,
                      repr(self.rate_limits), repr(self.circuit_breakers), repr(self.queues))
        if self._graph is not None and self._graph[0] == built_from:
            graph = self._graph[1]
        else:
            graph = build_graph(self.specs, name=self.name, capacity=self.resources,
                                executors=executors, rate_limits=self.rate_limits,
                                breakers=self.circuit_breakers, queues=self.queues)
            self._graph = (built_from, graph)
        if only is not None:
            graph = select(graph, only, executors=executors)
        return graph

    def plan(self, *, workers: int | None = None) -> Plan:
        from corral._runner import default_concurrency

        return make_plan(self.validate(), workers=workers or self.concurrency
                         or default_concurrency())

    def run(
        self,
        *,
        concurrency: int | None = None,
        fail_fast: bool = True,
        only: Iterable[str] | None = None,
        executors: Mapping[str, Executor] | None = None,
        listeners: Sequence[RunListener] = (),
        log_dir: str | Path | None = ".corral/logs",
        handle_signals: bool = True,
        seed: int | None = None,
        store: str | Store | None = None,
        resume: bool | str = False,
        broker: str | None = None,
        pool_breaker: bool | Mapping[str, Any] = True,
    ) -> RunResult:
        """Validate, then run to the end; returns every task's outcome.

        Does not raise when a task fails: check ``result.ok`` (or ``result.status``).
        ``store`` (a URL such as ``"sqlite:///.corral/corral.db"``, or an open store) records
        the run there, as ``corral run`` does, for ``corral runs``, ``show`` and ``logs``.

        ``resume`` finishes a recorded run in ``store`` as ``corral resume`` does: ``True``,
        the latest unfinished run of this DAG's name (none: a new run from scratch, as
        ``corral run FILE --resume``), or a run id. Only what did not succeed, changed since,
        or depends on either runs; the rest's stored values are reused. Raises
        :class:`~corral._errors.RunLocked` while the run's lease is live, and
        :class:`~corral._errors.NotResumable` if it succeeded or was already resumed.
        :meth:`resume_plan` says what would re-run, without running.

        ``broker`` (``"redis://host:6379/0"``, ``"postgresql://user@host/db"``) runs the
        attempts on the fleet of ``corral worker`` processes fed through that broker, as
        ``corral run --broker`` does (docs/fleet.md); raises
        :class:`~corral.errors.BrokenBroker` if it cannot be used. ``pool_breaker``: each
        queue's circuit breaker against crashing workers (True: 3 within 60 s open it, its
        tasks wait 30 s for a probe; a mapping such as ``{"failures": 5, "on_open":
        "fail"}`` changes those keys; False: none).

        Must be called outside a running event loop; inside one, ``await dag.run_async()``.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("dag.run() was called inside a running event loop; "
                               "use 'await dag.run_async(...)' there")
        return asyncio.run(self.run_async(
            concurrency=concurrency, fail_fast=fail_fast, only=only, executors=executors,
            listeners=listeners, log_dir=log_dir, handle_signals=handle_signals, seed=seed,
            store=store, resume=resume, broker=broker, pool_breaker=pool_breaker))

    async def run_async(
        self,
        *,
        concurrency: int | None = None,
        fail_fast: bool = True,
        only: Iterable[str] | None = None,
        executors: Mapping[str, Executor] | None = None,
        listeners: Sequence[RunListener] = (),
        log_dir: str | Path | None = ".corral/logs",
        handle_signals: bool = False,
        seed: int | None = None,
        store: str | Store | None = None,
        resume: bool | str = False,
        broker: str | None = None,
        pool_breaker: bool | Mapping[str, Any] = True,
    ) -> RunResult:
        """The same as :meth:`run`, on the caller's event loop."""
        import random

        from corral._launch import LaunchOptions, launch
        from corral._limits import parse_pool_breaker

        _check_resume(resume, store)
        only = list(only) if only is not None else None
        # Validate before touching the store; a resume validates the DAG as it plans it.
        work: Graph | Resume | None = (None if resume
                                       else self.validate(only=only, executors=executors))
        with _opened(store) as opened:
            if work is None:
                assert opened is not None
                work = self._prepare_resume(opened, resume, only) or self.validate(only=only)
            options = LaunchOptions(
                concurrency=concurrency or self.concurrency,
                fail_fast=fail_fast,
                executors=executors,
                log_dir=log_dir,
                env=self.env,
                handle_signals=handle_signals,
                rng=random.Random(seed) if seed is not None else None,
                broker=broker,
                pool_breaker=parse_pool_breaker(pool_breaker),
            )
            return await launch(work, opened, listeners=listeners, options=options).run()

    def resume_plan(
        self,
        *,
        store: str | Store,
        run_id: str | None = None,
        only: Iterable[str] | None = None,
    ) -> Resume | None:
        """What ``run(store=store, resume=run_id or True, only=only)`` would do, without
        running: the :class:`~corral.store.Resume` with the run it would finish (``.run``,
        whose ``lease_live`` says whether resuming it now is refused) and its plan
        (``.plan.rerun``: each task that would re-run and why, the reasons ``corral run
        --resume --dry-run`` prints; ``.plan.reuse``: the reused tasks and their stored
        values). None when ``run_id`` is None and no run of this DAG's name is unfinished:
        ``run`` would start from scratch."""
        if store is None:
            raise ValueError("resume_plan() needs the store the run was recorded in: "
                             "dag.resume_plan(store='sqlite:///.corral/corral.db')")
        with _opened(store) as opened:
            assert opened is not None
            return self._prepare_resume(opened, run_id or True, None if only is None
                                        else list(only))

    def _prepare_resume(
        self, store: Store, resume: bool | str, only: list[str] | None
    ) -> Resume | None:
        from corral.store import NotResumable, prepare_resume

        if not isinstance(resume, str):
            return prepare_resume(store, self, pipeline=self.name, only=only)
        planned = prepare_resume(store, self, run_id=resume, only=only)
        if planned is not None and planned.run.pipeline != self.name:
            # Likely the wrong id: reusing another DAG's results, and marking its run
            # resumed by this one, would be wrong however many task ids they share.
            raise NotResumable(f"run {resume} is a run of {planned.run.pipeline!r}, not of "
                               f"this DAG ({self.name!r})", why="other_dag")
        return planned


def _check_resume(resume: bool | str, store: str | Store | None) -> None:
    """``resume`` names a run in a store: without ``store`` there is none to look in."""
    if resume is False or resume is None:
        return
    if isinstance(resume, str) and not resume:
        raise ValueError("resume='' names no run: pass a run id, or resume=True for the "
                         "latest unfinished run of this DAG")
    if store is None:
        raise ValueError(f"resume={resume!r} needs the store the run was recorded in: "
                         "dag.run(store='sqlite:///.corral/corral.db', resume=...)")
    if isinstance(resume, str) and isinstance(store, str):
        from corral.store import RunNotFound, store_exists

        if not store_exists(store):  # do not make an empty store only to find nothing in it
            raise RunNotFound(f"no run {resume!r}: there is no store at {store}")


@contextlib.contextmanager
def _opened(store: str | Store | None) -> Iterator[Store | None]:
    """``store`` as an open store: a URL is opened here and closed at the end; an open store
    stays the caller's to close."""
    if not isinstance(store, str):
        yield store
        return
    from corral.store import open_store

    opened = open_store(store)
    try:
        yield opened
    finally:
        opened.close()


def select(
    graph: Graph, only: Iterable[str], *, executors: Mapping[str, Executor] | None = None
) -> Graph:
    """The sub-graph of ``only`` and everything upstream of them."""
    only = list(only)
    unknown = [t for t in only if t not in graph.index]
    if unknown:
        from corral._errors import Problem
        from corral._words import suggest

        problems = []
        for t in unknown:
            close = suggest(t, graph.index)
            problems.append(Problem(f"--only names unknown task {t!r}",
                                    hint=f"did you mean {close!r}?" if close else None))
        raise ValidationError(problems)
    keep = graph.upstream_closure(only)
    specs = [s for i, s in enumerate(graph.specs) if i in keep]
    return build_graph(specs, name=graph.name, capacity=graph.capacity, executors=executors,
                       rate_limits=graph.rate_limits, breakers=graph.breakers,
                       queues=graph.queues())


def _to_ref(value: Any) -> Any:
    if isinstance(value, Task):
        return TaskRef(value.id)
    if isinstance(value, list | tuple):
        converted = [_to_ref(v) for v in value]
        return type(value)(converted)
    if isinstance(value, dict):
        return {k: _to_ref(v) for k, v in value.items()}
    return value


def _as_ids(values: Any) -> list[str]:
    if isinstance(values, Task | str):
        values = [values]
    return [v.id if isinstance(v, Task) else v for v in values]


def _source_of(action: Any) -> tuple[str, int | None] | None:
    code = getattr(action, "__code__", None)
    if code is None:
        return None
    return (code.co_filename, code.co_firstlineno)
