"""The scheduler: a pure, synchronous state machine over a validated graph.

It knows tasks, states, dependencies, resources and time *as numbers it is given*; it has no
threads, no event loop, no clock and does no I/O. A driver (the asyncio run loop, a test, a
simulator) feeds it events and asks what to do next, in the spirit of
``graphlib.TopologicalSorter``'s ``get_ready`` / ``done``::

    sched = Scheduler(graph, concurrency=8)
    while sched.is_active():
        for i in sched.admit(now):          # ready tasks that fit: now RUNNING
            start attempt sched.attempts[i] of task i
        ... wait for an outcome, or until sched.next_wake() ...
        sched.succeeded(i, now) | sched.failed(i, now) | sched.skipped(i, now)
        for i in sched.expired(now):        # ran past their timeout: driver cancels them
            sched.failed(i, now)
        for i in sched.hung(now):           # silent past their heartbeat: the same
            sched.failed(i, now)
        sched.beat(i, attempt, now)         # any time: a sign of life from a running attempt

State machine (``TaskState``)::

    pending ──> ready ──> running ──> succeeded | failed | skipped | cancelled
       │          │          └──> retry_wait ──> ready          (backoff; time is an input)
       └──────────┴──> upstream_failed | skipped | cancelled    (decided by dependencies/stop)

Policies:

- **Order.** Ready tasks are ordered by ``priority`` (higher first), then by upward rank (the
  longest remaining path, from :func:`corral._plan.upward_ranks`; longest first), then by
  arrival (first ready, first started). Ranks come from each task's prior duration (its
  estimate or history) and, as attempts succeed, from durations learned per task kind
  (:mod:`corral._estimates`: the duration of an attempt is the time between its start and
  its success, as the driver reports them). When a learned estimate moves enough the ranks
  are computed again and the ready queue re-keyed, spaced so that re-ranks take at most
  :data:`RERANK_SHARE` of the time passed (a re-rank is counted as :data:`RERANK_COST_S` per
  task and edge); learning starts one such gap into the run, so it never costs a run more
  than a few percent of a core, and a run of tiny tasks nothing. The ready queue is a heap
  of integers, each packing a task's rank class, its arrival number and the task.
- **Admission.** A task starts only while a concurrency slot is free, its executor has a slot
  free (:meth:`limit_executor`: an executor that runs fewer attempts at once than the run
  admits, such as a process pool, declares it, so that no attempt waits inside it with its
  timeout running) and its resource request fits the free capacity. When a ready task does
  not fit, its request is *reserved*: later tasks competing for the same resource may not
  take it first, so a large task is never starved by a stream of small ones. Tasks that do
  not need that resource keep flowing around it.
- **Timers.** A ``timeout`` puts one deadline per attempt in a heap. A ``heartbeat`` puts one
  *silence deadline* per attempt in another, at the attempt's last sign of life plus the
  heartbeat. Beats do not touch the heap: :meth:`beat` overwrites one float in
  :attr:`last_beat`, and only when a silence deadline comes due does :meth:`hung` look at it
  and, if the attempt beat since, push the deadline forward. So a task that beats a thousand
  times a second costs one heap entry per heartbeat period, and a task without a heartbeat
  costs nothing. Entries of attempts that already ended are dropped when they surface.
- **Failure.** Fail-fast stops launching at the first failure (not counting ``allow_failure``
  tasks): every task that has not started is cancelled and the running ones are handed back to
  the driver to cancel — except ``all_done`` tasks (cleanup), which are *spared*: a running
  one goes on, and each other still runs once its own dependencies have ended (cancelled ones
  included), with its retries; what depends on it is cancelled. Keep-going runs everything
  that does not depend on a failure. A failed ``allow_failure`` task satisfies its
  dependents; an ``all_done`` task runs once its dependencies are final, however they ended.
- **Flow control.** A task with a ``rate_limit`` or a ``breaker`` passes a :class:`Gate`
  (:mod:`corral._limits`) when it would start. One its rate limit or breaker holds back leaves
  the ready queue, holds nothing, and comes back at its time (part of :meth:`next_wake`) or
  when a breaker changes; the tasks behind it flow around it. One an open breaker refuses is
  admitted, and listed in ``gate.refused``: the driver fails it without running it.
- **Interrupt.** :meth:`stop` (Ctrl-C, a cancelled run) starts nothing new, cleanup included:
  every task that has not started is cancelled, spared ones too.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Sequence

from corral._errors import InvalidTransition
from corral._estimates import OnlineEstimates
from corral._graph import Graph
from corral._kinds import task_kinds
from corral._limits import REFUSED, BreakerBook, Gate, PoolBreakers, RateState, gate_for
from corral._lookahead import rank_classes, ranking_pays
from corral._plan import DEFAULT_ESTIMATE, is_seconds, upward_ranks
from corral._scheduler_growth import GrowingScheduler
from corral._spec import TaskState, TriggerRule

__all__ = ["Scheduler"]

PENDING = TaskState.PENDING
READY = TaskState.READY
RUNNING = TaskState.RUNNING
RETRY_WAIT = TaskState.RETRY_WAIT
SUCCEEDED = TaskState.SUCCEEDED
FAILED = TaskState.FAILED
SKIPPED = TaskState.SKIPPED
UPSTREAM_FAILED = TaskState.UPSTREAM_FAILED
CANCELLED = TaskState.CANCELLED

# How many ready tasks that do not fit the admission scan steps over before it gives up for
# this round: bounds the cost of a round when many large tasks wait for one scarce resource.
LOOKAHEAD = 64
# A re-rank (ranks computed again from learned durations, the rest of the run played out in
# rank and in arrival order to choose between them (corral._lookahead), the ready queue
# re-keyed) is counted as costing this many seconds per task and per edge (measured in
# CPython: 0.6-2.1 us on the workflow traces, 1.2-1.5 us on layered 10k; 100,000 tasks all
# ready at once cost about 4 us each), and is done at most once per
# 1 / RERANK_SHARE of its cost in run time: at most 5% of one core goes to learning,
# whatever the graph.
RERANK_COST_S = 3e-6
RERANK_SHARE = 0.05


class Scheduler(GrowingScheduler):
    """Decides which task runs when. For drivers: call the methods below, never set fields.

    ``concurrency`` caps running tasks; resources are capped by ``graph.capacity``.
    ``estimates`` gives each task's prior duration in seconds, or None where unknown (default:
    each task's ``estimate`` option); durations are learned per task kind as the run goes
    (``learn=False``: not). ``ranks`` fixes the ranks instead (nothing learned). ``rng`` supplies
    jitter for retry backoff (seed it for repeatable tests). ``done`` lists tasks that already
    succeeded in an earlier run (resume): they start out succeeded.
    ``record=True`` keeps a log of every transition for :meth:`drain_transitions`.
    ``rates`` holds the state of the graph's rate limits (default: a new one, in this process),
    ``breakers`` that of its circuit breakers (default: likewise); ``pools`` gives the tasks
    that run on the fleet a breaker per queue (:class:`~corral._limits.PoolBreakers`).
    """

    def __init__(
        self,
        graph: Graph,
        *,
        concurrency: int,
        fail_fast: bool = True,
        ranks: Sequence[float] | None = None,
        estimates: Sequence[float | None] | None = None,
        learn: bool = True,
        rng: random.Random | None = None,
        done: Iterable[int] = (),
        record: bool = False,
        rates: RateState | None = None,
        breakers: BreakerBook | None = None,
        pools: PoolBreakers | None = None,
    ) -> None:
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ValueError(f"concurrency must be a whole number >= 1, not {concurrency!r}")
        n = len(graph)
        self.graph = graph
        self.concurrency = concurrency
        self.fail_fast = fail_fast
        # stopping: no new work but spared all_done tasks (after a fail-fast failure or an
        # interrupt); halted: no new work at all (after an interrupt, :meth:`stop`).
        self.stopping = False
        self.halted = False
        self._rng = rng or random.Random()
        specs = graph.specs
        self._dependents = graph.dependents
        self.state: list[TaskState] = [PENDING] * n
        self.attempts: list[int] = [0] * n
        self._waiting: list[int] = [len(d) for d in graph.deps]
        self._all_done: list[bool] = [s.trigger_rule == TriggerRule.ALL_DONE for s in specs]
        self._allow_failure: list[bool] = [s.allow_failure for s in specs]
        self._max_attempts: list[int] = [s.retry.retries + 1 for s in specs]
        self._heartbeat: list[float | None] = [s.heartbeat for s in specs]
        # Per task, (timeout, heartbeat) if it has either, else None: one test in admit for
        # the common task that has neither.
        self._timers: list[tuple[float | None, float | None] | None] = [
            (s.timeout, s.heartbeat) if s.timeout is not None or s.heartbeat is not None
            else None for s in specs
        ]
        # Timers of tasks whose executor reports when an attempt really starts: armed then, by
        # started(), not at admission (see defer_timers); and which attempt armed them.
        self._deferred: dict[int, tuple[float | None, float | None]] = {}
        self._armed_attempt: dict[int, int] = {}
        # When each running attempt last showed a sign of life (only read for tasks with a
        # heartbeat). A plain list of floats: beats may come from other threads, and one
        # store is all a beat costs.
        self.last_beat: list[float] = [0.0] * n
        self.counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0)
        self.counts[PENDING] = n
        self._active = n  # tasks not yet in a final state
        self.running = 0
        self._log: list[tuple[int, TaskState, int]] | None = [] if record else None
        # Rate limits and circuit breakers; None when no task has either.
        self.gate: Gate | None = gate_for(graph.specs, graph.rate_limits, graph.breakers,
                                          rates, breakers, pools, graph.executors)
        self._rates, self._breakers, self._pools = rates, breakers, pools
        # Executor slots (limit_executor) and deferred timers (defer_timers) by executor
        # name, for tasks added while the run goes on (grow).
        self._executor_slots: dict[str, int] = {}
        self._capacity: dict[str, int] = {}  # each of those executors' slots, as last set
        self._deferred_executors: set[str] = set()

        # Resources: names to slots in a free-capacity vector; per task a tuple of
        # (slot, amount) pairs, empty for the common task that requests nothing.
        names = sorted(graph.capacity)
        slot = {name: k for k, name in enumerate(names)}
        self.resource_names = names
        self.free: list[float] = [float(graph.capacity[name]) for name in names]
        self._requests: list[tuple[tuple[int, float], ...]] = [
            tuple((slot[r], float(a)) for r, a in s.resources.items() if a)
            if s.resources else () for s in specs
        ]

        # Ready order: priority, then upward rank, then arrival. A key packs the task's rank
        # class (its place among the distinct (priority, rank) pairs), its arrival number and
        # the task: class << (seq_bits + task_bits) | seq << task_bits | i.
        self._task_bits = max(1, (n - 1).bit_length())
        self._task_mask = (1 << self._task_bits) - 1
        # A task becomes ready at most once per attempt: arrival numbers stay below this.
        # (Small keys are cheap keys: below 2**60 an int is two machine digits.)
        self._seq_bits = (n * max(self._max_attempts, default=1) + 1).bit_length()
        self._low_mask = (1 << (self._task_bits + self._seq_bits)) - 1
        self._seq = 0
        self._class_key: list[int] = [0] * n  # rank class shifted into place, and the task
        self._priorities = [s.priority for s in specs] if any(s.priority for s in specs) else None
        self.learner: OnlineEstimates | None = None
        # Each task's prior duration, while a learner is to be made (None: learning is off).
        self._prior: list[float | None] | None = None
        if ranks is None:
            if estimates is None:  # the specs' estimates, checked by build_graph
                prior = [s.estimate for s in specs]
            else:
                prior = list(estimates)
                if len(prior) != n or not all(d is None or is_seconds(d) for d in prior):
                    raise ValueError("estimates must give each task a finite number of "
                                     "seconds >= 0, or None")
            if prior.count(None) == n:  # the common first run: nothing known (count is C)
                durations = [DEFAULT_ESTIMATE] * n
            else:
                durations = [DEFAULT_ESTIMATE if d is None else d for d in prior]
            ranks = upward_ranks(graph, durations)
            if learn:
                self._prior = prior
        self._set_classes(ranks)
        # Re-ranks: one is due when a learned estimate moved enough (_stale), and allowed
        # once the run's time has passed _next_rerank. The first is due from the start and
        # only makes the learner (task kinds are found then), which learns from the successes
        # after it: a run too short to afford a re-rank never pays for kinds either, and the
        # first successes of a run long enough to learn from are not worth their cost.
        self._stale = self._prior is not None
        self._rerank_gap = (n + sum(map(len, graph.deps))) * RERANK_COST_S / RERANK_SHARE
        self._next_rerank = self._rerank_gap
        self.reranks = 0
        self.ranked_reranks = 0  # re-ranks that kept rank order (the others: arrival order)
        self._start: list[float] = [0.0] * n  # when each running attempt started
        self._ready: list[int] = []  # heap of keys
        self._retries: list[tuple[float, int]] = []  # heap of (due, task)
        self._deadlines: list[tuple[float, int, int]] = []  # heap of (deadline, task, attempt)
        self._silences: list[tuple[float, int, int]] = []  # the same, for heartbeats

        done = list(done)
        for i in done:  # mark them all first, so none of them is made ready by another
            self._transition(i, SUCCEEDED)
        for i in done:
            self._resolve(i, SUCCEEDED)
        for i in range(n):
            if self.state[i] is PENDING and self._waiting[i] == 0:
                self._make_ready(i)

    # ------------------------------------------------------------------ queries
    def is_active(self) -> bool:
        """Whether any task has yet to reach a final state."""
        return self._active > 0

    def next_wake(self) -> float | None:
        """The earliest time at which something happens without an event: a retry falls due,
        a running task's deadline passes, or its silence deadline does (which may turn out to
        have moved: see :meth:`hung`). ``None`` when nothing is timed."""
        wake = None
        if self._retries:
            wake = self._retries[0][0]
        deadlines = self._deadlines
        if deadlines and self._drop_ended(deadlines):
            d = deadlines[0][0]
            if wake is None or d < wake:
                wake = d
        silences = self._silences
        if silences and self._drop_ended(silences):
            d = silences[0][0]
            if wake is None or d < wake:
                wake = d
        if self.gate is not None:
            held = self.gate.next_wake()  # a rate limit or an open breaker lets a task through
            if held is not None and (wake is None or held < wake):
                wake = held
        return wake

    def ready_count(self) -> int:
        return len(self._ready)

    def stalled(self) -> bool:
        """Tasks remain, yet nothing runs and nothing waits on a timer: after :meth:`admit`
        started nothing, nothing will ever change."""
        return (self._active > 0 and self.running == 0 and not self._retries
                and (self.gate is None or self.gate.next_wake() is None))

    def blocked_reasons(self) -> dict[int, str]:
        """Why each unfinished task is not running: the diagnosis of a stalled run."""
        names = self.resource_names
        out: dict[int, str] = {}
        for i, state in enumerate(self.state):
            if state is PENDING:
                waits = [self.graph.ids[j] for j in self.graph.deps[i]
                         if not self.state[j].is_final]
                out[i] = f"waits for {', '.join(waits)}" if waits else "waits for dependencies"
            elif state is READY:
                short = [f"{names[r]} (needs {a:g}, {self.free[r]:g} free)"
                         for r, a in self._requests[i] if self.free[r] < a]
                out[i] = ("lacks " + ", ".join(short)) if short else "waits for a slot"
                if self.gate is not None and i in self.gate.holds:
                    out[i] = self.gate.holds[i]
            elif state is RETRY_WAIT:
                out[i] = "waits to retry"
            elif state is RUNNING:
                out[i] = "is running"
        return out

    def drain_transitions(self) -> list[tuple[int, TaskState, int]]:
        """``(task, new state, attempt)`` since the last call (only with ``record=True``).

        ``attempt`` is the attempt the transition belongs to: the one that just started,
        ended or failed (0 before the first).
        """
        log = self._log
        if not log:
            return []
        self._log = []
        return log

    # ------------------------------------------------------------------ driver events
    def limit_executor(self, name: str, slots: int) -> None:
        """At most ``slots`` attempts of the tasks on executor ``name`` run at once. Call it
        before the first :meth:`admit`. A slot works as a resource each of those tasks holds
        one of while it runs, with the same reservation against starvation."""
        if slots < 1:
            raise ValueError(f"executor {name!r} must have at least one slot, not {slots}")
        if self.running:
            raise InvalidTransition(f"limit_executor({name!r}) after tasks started: the "
                                    "limit applies from the first admit")
        slot = self._executor_slots[name] = len(self.free)
        self._capacity[name] = slots
        self.resource_names.append(f"slots of executor {name!r}")
        self.free.append(float(slots))
        requests = self._requests
        for i, executor in enumerate(self.graph.executors):
            if executor == name:
                requests[i] = (*requests[i], (slot, 1.0))

    def defer_timers(self, name: str) -> None:
        """Tasks on executor ``name`` arm their timeout and heartbeat when the executor says an
        attempt has started (:meth:`started`: a worker took it), not at admission: time an
        attempt waits in a remote queue is not its own. Call it before the first admit."""
        self._deferred_executors.add(name)
        for i, executor in enumerate(self.graph.executors):
            timers = self._timers[i]
            if executor == name and timers is not None:
                self._deferred[i] = timers
                self._timers[i] = None

    def started(self, i: int, attempt: int, now: float) -> None:
        """Attempt ``attempt`` of task ``i`` really started now; its deferred timers start.
        Ignored for an attempt that is not the running one, or already started."""
        if self.state[i] is not RUNNING or self.attempts[i] != attempt:
            return
        self._start[i] = now
        timers = self._deferred.get(i)
        if timers is None or self._armed_attempt.get(i) == attempt:
            return
        self._armed_attempt[i] = attempt
        self._arm(i, attempt, now, timers)

    def admit(self, now: float) -> list[int]:
        """Move due retries to ready, then start every ready task that fits; return them.

        Each returned task is RUNNING and ``attempts[i]`` is the number of this attempt.
        """
        if self._retries:
            self._release_due(now)
        if self._stale and now >= self._next_rerank:
            self._rerank(now)
        gate = self.gate
        if gate is not None:
            self._release_held(gate, now)
        ready = self._ready
        slots = self.concurrency - self.running
        if self.halted or slots <= 0 or not ready:
            return []
        started: list[int] = []
        blocked: list[int] = []
        reserved: list[float] | None = None
        requests = self._requests
        mask = self._task_mask
        start = self._start
        free = self.free
        while ready and slots > 0:
            k = heapq.heappop(ready)
            i = k & mask
            request = requests[i]
            if request:
                if reserved is None:
                    fits = all(free[r] >= a for r, a in request)
                else:
                    fits = all(free[r] - reserved[r] >= a for r, a in request)
                if not fits:
                    blocked.append(k)
                    if reserved is None:
                        reserved = [0.0] * len(free)
                    for r, a in request:
                        reserved[r] += a
                    if len(blocked) >= LOOKAHEAD:
                        break
                    continue
            if gate is not None and gate.gated[i]:
                verdict = gate.check(i, now)
                if verdict is not None and verdict is not REFUSED:
                    continue  # held back by a rate limit or breaker: out of the queue
            if request:
                for r, a in request:
                    free[r] -= a
            self.state[i] = RUNNING
            self.counts[READY] -= 1
            self.counts[RUNNING] += 1
            start[i] = now
            attempt = self.attempts[i] = self.attempts[i] + 1
            if self._log is not None:
                self._log.append((i, RUNNING, attempt))
            timers = self._timers[i]
            if timers is not None:
                self._arm(i, attempt, now, timers)
            started.append(i)
            slots -= 1
        self.running += len(started)
        for k in blocked:
            heapq.heappush(ready, k)
        return started

    def succeeded(self, i: int, now: float) -> None:
        """The running attempt of task ``i`` succeeded; its duration (since it started:
        :meth:`admit`, or :meth:`started` when the executor reports it) is learned."""
        if self.gate is not None:
            self._gate_ended(i, True, now)
        self._leave_running(i, SUCCEEDED)
        learner = self.learner
        if learner is not None and learner.learn(i, now - self._start[i]):
            self._stale = True
        self._resolve(i, SUCCEEDED)

    def skipped(self, i: int, now: float) -> None:
        """The running attempt of task ``i`` asked to be skipped."""
        if self.gate is not None:
            self._gate_ended(i, None, now)
        self._leave_running(i, SKIPPED)
        self._resolve(i, SKIPPED)

    def cancelled(self, i: int, now: float) -> None:
        """The running attempt of task ``i`` was cancelled (after :meth:`stop`)."""
        if self.gate is not None:
            self._gate_ended(i, None, now)
        self._leave_running(i, CANCELLED)
        self._resolve(i, CANCELLED)

    def failed(self, i: int, now: float, *, retryable: bool = True,
               infra: bool = False) -> list[int]:
        """The running attempt of task ``i`` failed; ``infra``: because the machinery did
        (a crashed worker), not the task (only that counts against its pool's breaker).

        It is retried after its backoff if attempts remain, ``retryable`` holds and the run is
        not stopping. Returns the running tasks the driver must now cancel (fail-fast), usually
        none.
        """
        if self.gate is not None:
            if i in self.gate.refused:
                retryable = False  # refused by an open breaker: it fails at once, for good
            self._gate_ended(i, False, now, infra)
        if (
            retryable
            and (not self.stopping or (self._all_done[i] and not self.halted))
            and self.attempts[i] < self._max_attempts[i]
        ):
            self._leave_running(i, RETRY_WAIT)
            delay = self.graph.specs[i].retry.delay_for(self.attempts[i], self._rng.random())
            heapq.heappush(self._retries, (now + delay, i))
            return []
        self._leave_running(i, FAILED)
        self._resolve(i, FAILED)
        if self.fail_fast and not self._allow_failure[i] and not self.stopping:
            return self._fail_fast()
        return []

    def expired(self, now: float) -> list[int]:
        """Running tasks whose current attempt has passed its deadline.

        The driver cancels each one in its executor and reports it with :meth:`failed`.
        """
        out: list[int] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, i, attempt = heapq.heappop(deadlines)
            if self.state[i] is RUNNING and self.attempts[i] == attempt:
                out.append(i)
        return out

    def hung(self, now: float) -> list[int]:
        """Running tasks whose current attempt has shown no sign of life for its heartbeat.

        The driver cancels each one in its executor and reports it with :meth:`failed`, as
        for :meth:`expired`.
        """
        out: list[int] = []
        silences = self._silences
        while silences and silences[0][0] <= now:
            _, i, attempt = heapq.heappop(silences)
            if self.state[i] is not RUNNING or self.attempts[i] != attempt:
                continue  # that attempt already ended
            heartbeat = self._heartbeat[i]
            assert heartbeat is not None
            due = self.last_beat[i] + heartbeat
            if due > now:  # it beat since this deadline was set: look again then
                heapq.heappush(silences, (due, i, attempt))
            else:
                out.append(i)
        return out

    def beat(self, i: int, attempt: int, now: float) -> None:
        """A sign of life from attempt ``attempt`` of task ``i``: its silence starts over.

        Cheap and safe to call from any thread (one comparison, one store); a beat of an
        attempt that is not the running one is ignored.
        """
        # From another thread, a beat may race with its attempt's end and land on the next
        # attempt of the task: that moves the next attempt's silence by microseconds at most.
        if self.attempts[i] == attempt and self.state[i] is RUNNING and now > self.last_beat[i]:
            self.last_beat[i] = now

    def stop(self, now: float) -> list[int]:
        """Stop launching anything (an interrupt): cancel every task that has not started,
        cleanup included; return the running ones, which the driver must cancel and then
        report."""
        self.stopping = self.halted = True
        for i, state in enumerate(self.state):
            if state is PENDING or state is READY or state is RETRY_WAIT:
                self._transition(i, CANCELLED)
        self._ready.clear()
        self._retries.clear()
        return [i for i, s in enumerate(self.state) if s is RUNNING]

    def _fail_fast(self) -> list[int]:
        """Stop launching after a failure: cancel every task that has not started but the
        ``all_done`` ones, which still run once their dependencies have ended; return the
        running tasks, which the driver must cancel and then report."""
        self.stopping = True
        all_done, state = self._all_done, self.state
        cancelled = []
        for i, s in enumerate(state):
            if (s is PENDING or s is READY or s is RETRY_WAIT) and not all_done[i]:
                self._transition(i, CANCELLED)
                cancelled.append(i)
        # The spared tasks keep their places in the ready queue and their retries.
        mask = self._task_mask
        self._ready = [k for k in self._ready if state[k & mask] is READY]
        heapq.heapify(self._ready)
        self._retries = [(due, i) for due, i in self._retries if state[i] is RETRY_WAIT]
        heapq.heapify(self._retries)
        # Cancelled dependencies have ended: that may make a spared task ready.
        for i in cancelled:
            self._resolve(i, CANCELLED)
        # A cleanup already running finishes too.
        return [i for i, s in enumerate(state) if s is RUNNING and not all_done[i]]

    # ------------------------------------------------------------------ flow control
    def _release_held(self, gate: Gate, now: float) -> None:
        """Tasks the gate held back whose time has come (or whose breaker changed) go back
        into the ready queue, unless they were cancelled meanwhile."""
        state, class_key, ready, bits = self.state, self._class_key, self._ready, self._task_bits
        for i in gate.release(now):
            if state[i] is READY:  # arrives again: behind the ready tasks of its class
                seq = self._seq = self._seq + 1
                heapq.heappush(ready, class_key[i] | (seq << bits))

    def _gate_ended(self, i: int, ok: bool | None, now: float, infra: bool = False) -> None:
        gate = self.gate
        if gate is not None and gate.gated[i] and self.state[i] is RUNNING:
            gate.ended(i, ok, now, infra=infra)

    # ------------------------------------------------------------------ internals
    def _arm(
        self, i: int, attempt: int, now: float, timers: tuple[float | None, float | None]
    ) -> None:
        """Set the deadlines of an attempt that starts now (starting is a sign of life)."""
        timeout, heartbeat = timers
        if timeout is not None:
            heapq.heappush(self._deadlines, (now + timeout, i, attempt))
        if heartbeat is not None:
            self.last_beat[i] = now
            heapq.heappush(self._silences, (now + heartbeat, i, attempt))

    def _drop_ended(self, heap: list[tuple[float, int, int]]) -> bool:
        """Pop the entries on top of ``heap`` whose attempt is no longer running; True if an
        entry of a running attempt is left on top."""
        state, attempts = self.state, self.attempts
        while heap:
            _, i, attempt = heap[0]
            if state[i] is RUNNING and attempts[i] == attempt:
                return True
            heapq.heappop(heap)
        return False

    def _leave_running(self, i: int, new: TaskState) -> None:
        if self.state[i] is not RUNNING:
            raise InvalidTransition(
                f"task {self.graph.ids[i]!r} cannot go from {self.state[i]} to {new}: "
                "only a running task reports an outcome"
            )
        request = self._requests[i]
        if request:
            free = self.free
            for r, a in request:
                free[r] += a
        self.running -= 1
        self.state[i] = new
        counts = self.counts
        counts[RUNNING] -= 1
        counts[new] += 1
        if new is not RETRY_WAIT:
            self._active -= 1
        if self._log is not None:
            self._log.append((i, new, self.attempts[i]))

    def _transition(self, i: int, new: TaskState) -> None:
        """Move a task that is not running into ``new`` (a final state)."""
        old = self.state[i]
        if old.is_final or old is RUNNING:
            raise InvalidTransition(
                f"task {self.graph.ids[i]!r} cannot go from {old} to {new}"
            )
        self.state[i] = new
        self.counts[old] -= 1
        self.counts[new] += 1
        self._active -= 1
        if self._log is not None:
            self._log.append((i, new, self.attempts[i]))

    def _make_ready(self, i: int, old: TaskState = PENDING) -> None:
        """A pending task whose dependencies allow it, or a retry whose backoff is over."""
        self.state[i] = READY
        self.counts[old] -= 1
        self.counts[READY] += 1
        if self._log is not None:
            self._log.append((i, READY, self.attempts[i]))
        seq = self._seq = self._seq + 1
        heapq.heappush(self._ready, self._class_key[i] | (seq << self._task_bits))

    def _set_classes(self, ranks: Sequence[float]) -> None:
        """Number the distinct (priority, rank) pairs, best first, into each task's key (with
        the task itself: a key only lacks its arrival number)."""
        self._class_key = rank_classes(ranks, self._priorities, self._task_bits + self._seq_bits)

    def _set_keys(self, classes: Sequence[int]) -> None:
        shift = self._task_bits + self._seq_bits
        self._class_key = [c << shift | i for i, c in enumerate(classes)]

    def _make_learner(self) -> None:
        """The learner, when something it could learn would change the order."""
        prior = self._prior
        assert prior is not None
        self._prior = None
        kinds, families = task_kinds(self.graph.specs)
        if OnlineEstimates.worth_learning(kinds, prior):
            self.learner = OnlineEstimates(kinds, families, prior)

    def _rerank(self, now: float) -> None:
        """Ranks from what has been learned, kept if they pay (else arrival order alone); the
        ready tasks keep their arrival numbers."""
        self._stale = False
        self._next_rerank = now + self._rerank_gap
        learner = self.learner
        if learner is None:  # the first: nothing learned yet
            self._make_learner()
            return
        self.reranks += 1
        durations = learner.durations()
        if len(durations) < len(self.state):  # tasks added since the learner was made
            durations += [DEFAULT_ESTIMATE if s.estimate is None else s.estimate
                          for s in self.graph.specs[len(durations):]]
        classes = rank_classes(upward_ranks(self.graph, durations), self._priorities)
        by_arrival = rank_classes([0.0] * len(classes), self._priorities)
        if self._ranking_pays(classes, by_arrival, durations, now):
            self.ranked_reranks += 1
        else:  # the guesses promise too little: arrival order (_lookahead)
            classes = by_arrival
        self._set_keys(classes)
        class_key, mask = self._class_key, self._task_mask
        arrival = self._low_mask & ~mask
        self._ready = [class_key[k & mask] | (k & arrival) for k in self._ready]
        heapq.heapify(self._ready)

    def _ranking_pays(
        self, ranked: list[int], arrival: list[int], durations: list[float], now: float
    ) -> bool:
        state, start, mask = self.state, self._start, self._task_mask
        return ranking_pays(
            ranked, arrival,
            [k & mask for k in sorted(self._ready, key=self._low_mask.__and__)],
            [(max(now, start[i] + durations[i]), i) for i, s in enumerate(state) if s is RUNNING],
            now=now, state=state, waiting=self._waiting, dependents=self._dependents,
            durations=durations, slots=self.concurrency,
        )

    def _release_due(self, now: float) -> None:
        retries = self._retries
        while retries and retries[0][0] <= now:
            self._make_ready(heapq.heappop(retries)[1], RETRY_WAIT)

    def _resolve(self, i: int, outcome: TaskState) -> None:
        """Tell the dependents of task ``i`` (now final) how it ended, transitively."""
        stack = [(i, outcome)]
        while stack:
            j, how = stack.pop()
            satisfies = how is SUCCEEDED or (
                (how is FAILED or how is UPSTREAM_FAILED) and self._allow_failure[j]
            )
            for k in self._dependents[j]:
                if self.state[k] is not PENDING:
                    continue
                if satisfies or self._all_done[k]:
                    self._waiting[k] -= 1
                    # (after a stop, only spared all_done tasks are still pending)
                    if self._waiting[k] == 0 and not self.halted:
                        self._make_ready(k)
                    continue
                fate = UPSTREAM_FAILED if how is FAILED or how is UPSTREAM_FAILED else how
                self._transition(k, fate)
                stack.append((k, fate))
