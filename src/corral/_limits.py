"""Flow control: GCRA rate limits and circuit breakers, as pure functions of state and time.

Nothing here has a clock, a thread of its own or I/O: time is an argument, as everywhere in
the scheduler. Three layers::

    gcra(tat, now, limit)          one rate limit: ok (and the new state) or "retry at T"
    ask / record                   one circuit breaker: a table of transitions
    Gate                           what the scheduler asks before it admits a gated task;
                                   holds back the tasks that must wait, and for how long

**GCRA** (the generic cell rate algorithm) keeps one number per limit, the *theoretical
arrival time* (TAT). A limit of ``rate`` per second with a ``burst`` spaces admissions by
``interval = 1/rate`` and tolerates ``burst - 1`` of them early: a request at ``now`` conforms
when ``now >= TAT - (burst - 1) * interval``, and then ``TAT = max(TAT, now) + interval``.
There is no bucket to refill and no timer: "retry at" is exact.

**Late wake-ups do not drift.** A request told "retry at T" comes back when its timer fires,
a little after T. Counting it at that late ``now`` would start the next interval late, and the
lateness would add up (100/s realised 91/s). So a request says when it was *due* (the T it was
told): if it comes back less than one interval after T, it counts at T and the schedule stays
exact (``TAT = max(TAT, due) + interval``). A return later than that (a slot it waited for, a
suspended machine) counts at ``now``: catching up on a long pause would let a burst through
that the limit does not allow.

**Circuit breakers**::

    closed ──failures within window──> open ──reset elapsed──> half_open
      ^                                  ^                        │ probe failed
      └───────── probes succeeded ───────┴────────────────────────┘

While open, a task that uses the breaker fails at once (``on_open: fail``) or waits until the
breaker half-opens (``on_open: wait``). Half-open admits ``half_open`` probes; more tasks wait
for their outcome. When that many probes have succeeded the breaker closes; a failed probe
opens it again. Outcomes of attempts that started before the breaker opened are ignored
while it is open or half-open.

**Pool breakers.** A run on the fleet also gives each queue's pool of workers a breaker of
its own (:class:`PoolBreakers`, named ``pool:QUEUE``), which every task on that queue passes
as well as its own ``breaker``. Only *infrastructure* failures count against it (the attempt
ended in a :class:`~corral.errors.BrokenExecutor`: its workers crashed, it was dead-lettered);
a task's own exception shows the pool works, as a success does. It holds the queue's tasks
while open (``on_open: wait``, the default: nothing is lost, and a half-open probe finds out
when the pool works again) or fails them with ``CircuitOpen`` naming the pool. Its state is
this run's own (a shared one would cost a round trip per admitted attempt).

**The seam for fleet-wide limits.** The :class:`Gate` does not keep GCRA state itself: it asks
a :class:`RateState` (:meth:`~RateState.try_acquire`: all of a task's limits at once, or none).
:class:`LocalRates` is the one in this process (thread-safe, also behind ``corral.limit``).
:class:`corral.fleet.limits_redis.RedisRates` is the shared one of a run with a Redis broker:
the same :func:`gcra` arithmetic as one Redis script, so that 10/s means 10/s across workers
and runs (:mod:`corral.fleet.limits_postgres`: the same with a PostgreSQL broker). Breakers
have the same kind of seam, :class:`BreakerBook` (:class:`LocalBreakers`, or a Redis or
PostgreSQL one that runs on one broker share).
"""

from __future__ import annotations

import heapq
import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from corral._spec import TaskSpec

__all__ = [
    "ALLOW",
    "POOL_BREAKER",
    "Breaker",
    "BreakerBook",
    "BreakerChange",
    "BreakerState",
    "BreakerStatus",
    "Gate",
    "Hold",
    "LocalBreakers",
    "LocalRates",
    "PoolBreakers",
    "RateLimit",
    "RateState",
    "Refuse",
    "ask",
    "gate_for",
    "gcra",
    "parse_breaker",
    "parse_duration",
    "parse_pool_breaker",
    "parse_rate",
    "parse_rate_limit",
    "queue_breakers",
    "record",
]

_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([A-Za-z]+)\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


# --------------------------------------------------------------------------- rate limits
@dataclass(frozen=True, slots=True)
class RateLimit:
    """``rate`` admissions per second, ``burst`` of them at once; ``text`` as written."""

    rate: float
    burst: int = 1
    text: str = ""

    @property
    def interval(self) -> float:
        return 1.0 / self.rate

    @property
    def tolerance(self) -> float:
        """How early an admission may come: ``burst - 1`` intervals."""
        return (self.burst - 1) / self.rate


def parse_rate(text: object) -> float:
    """``"10/s"``, ``"60/m"``, ``"1000/h"`` as admissions per second; ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"a rate is written N/s, N/m or N/h, not {text!r}")
    match = _RATE.match(text)
    if match is None or match.group(2) not in _PER:
        raise ValueError(f"malformed rate {text!r}: write N/s, N/m or N/h (e.g. 10/s)")
    count = float(match.group(1))
    if count <= 0:
        raise ValueError(f"rate {text!r} must admit more than 0")
    return count / _PER[match.group(2)]


def parse_rate_limit(value: object) -> RateLimit:
    """A declared rate limit: ``"10/s"`` or ``{rate: "60/m", burst: 5}`` (or a RateLimit)."""
    if isinstance(value, RateLimit):
        return value
    if isinstance(value, str):
        return RateLimit(parse_rate(value), 1, value.strip())
    if isinstance(value, Mapping):
        unknown = sorted(set(map(str, value)) - {"rate", "burst"})
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r} (a rate limit has rate and burst)")
        if "rate" not in value:
            raise ValueError("missing key 'rate' (e.g. rate: 10/s)")
        burst = value.get("burst", 1)
        if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
            raise ValueError(f"burst must be a whole number >= 1, not {burst!r}")
        text = value["rate"]
        return RateLimit(parse_rate(text), burst, str(text).strip())
    raise ValueError(f"a rate limit is a rate such as '10/s' or {{rate: '10/s', burst: 5}}, "
                     f"not {value!r}")


def gcra(
    tat: float, now: float, limit: RateLimit, due: float | None = None
) -> tuple[float | None, float]:
    """One GCRA decision: ``(None, new_tat)`` if a request at ``now`` conforms, else
    ``(retry_at, tat)``: the earliest time it would. A limit never used has ``tat = -inf``.

    ``due``: the retry time this request was given before, if it comes back for it. Admitted
    less than one interval after it, it counts at ``due``, so a late timer does not push the
    later admissions back (see the module note)."""
    allowed_at = tat - limit.tolerance
    if now < allowed_at:
        return allowed_at, tat
    at = due if due is not None and due <= now < due + limit.interval else now
    return None, max(tat, at) + limit.interval


class RateState(Protocol):
    """Where GCRA state lives: this process (:class:`LocalRates`) or, later, a shared store.

    :meth:`try_acquire` must be atomic: all the ``names`` conform and are taken, or none is
    and the answer is the earliest time worth asking again (the latest of their retry times).
    ``due`` is the retry time a caller comes back for (see :func:`gcra`); None on a first ask.
    """

    def try_acquire(
        self, names: Sequence[str], now: float, due: float | None = None
    ) -> float | None: ...


class LocalRates:
    """GCRA state of one run's limits, in this process. Thread-safe: the scheduler and tasks
    calling ``corral.limit`` share it."""

    def __init__(self, limits: Mapping[str, RateLimit]) -> None:
        self.limits = dict(limits)
        self._tat: dict[str, float] = dict.fromkeys(limits, -math.inf)
        self._lock = threading.Lock()

    def try_acquire(
        self, names: Sequence[str], now: float, due: float | None = None
    ) -> float | None:
        with self._lock:
            tat = self._tat
            new: list[float] = []
            retry_at: float | None = None
            for name in names:
                at, after = gcra(tat[name], now, self.limits[name], due)
                if at is not None:
                    retry_at = at if retry_at is None else max(retry_at, at)
                new.append(after)
            if retry_at is not None:
                return retry_at
            for name, after in zip(names, new, strict=True):
                tat[name] = after
            return None


# --------------------------------------------------------------------------- breakers
class BreakerState(StrEnum):
    CLOSED = "closed"  # tasks run; failures are counted
    OPEN = "open"  # tasks fail at once (or wait) until reset has passed
    HALF_OPEN = "half_open"  # a few probes run; their outcome closes or reopens it


@dataclass(frozen=True, slots=True)
class Breaker:
    """A declared breaker: opens after ``failures`` failures within ``window`` seconds, stays
    open ``reset`` seconds, then lets ``half_open`` probes through. ``on_open``: ``fail``
    (tasks fail at once with CircuitOpen) or ``wait`` (tasks wait for it to half-open)."""

    failures: int
    window: float = 60.0
    reset: float = 30.0
    half_open: int = 1
    on_open: str = "fail"


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """A breaker's state. ``recent``: times of failures still within the window (closed);
    ``opened_at``: when it last opened; ``probes``: probes running; ``passed``: probes that
    succeeded since it half-opened."""

    state: BreakerState = BreakerState.CLOSED
    recent: tuple[float, ...] = ()
    opened_at: float = 0.0
    probes: int = 0
    passed: int = 0


class Refuse(NamedTuple):
    """The breaker is open: fail the task now. It half-opens at ``until``."""

    until: float


class Hold(NamedTuple):
    """Not yet: ask again at ``until`` (``inf``: when the breaker's state changes)."""

    until: float


ALLOW = None
"""The verdict that lets a task through (``ask`` answers it, or a Refuse, or a Hold)."""

Verdict = Refuse | Hold | None


def ask(cfg: Breaker, st: BreakerStatus, now: float) -> tuple[Verdict, BreakerStatus, bool]:
    """May a task that uses the breaker start at ``now``? ``(verdict, new status, probe)``:
    ``probe`` says the task is admitted as a half-open probe. Keep the new status only if the
    task is admitted (time moving the breaker to half-open is kept by :meth:`Gate.check`)."""
    if st.state is BreakerState.OPEN:
        until = st.opened_at + cfg.reset
        if now < until:
            return (Refuse(until) if cfg.on_open == "fail" else Hold(until)), st, False
        st = BreakerStatus(BreakerState.HALF_OPEN, opened_at=st.opened_at)
    if st.state is BreakerState.HALF_OPEN:
        if st.probes + st.passed < cfg.half_open:
            return ALLOW, replace(st, probes=st.probes + 1), True
        return Hold(math.inf), st, False
    return ALLOW, st, False


def record(
    cfg: Breaker, st: BreakerStatus, now: float, ok: bool | None, *, probe: bool
) -> BreakerStatus:
    """The breaker after an attempt ended at ``now``: ``ok`` True (succeeded), False (failed)
    or None (neither: cancelled, skipped). ``probe``: it was admitted as a half-open probe."""
    if st.state is BreakerState.CLOSED:
        if ok is not False:
            return st
        recent = (*(t for t in st.recent if t > now - cfg.window), now)
        if len(recent) >= cfg.failures:
            return BreakerStatus(BreakerState.OPEN, opened_at=now)
        return replace(st, recent=recent)
    if st.state is BreakerState.HALF_OPEN and probe:
        if ok is False:
            return BreakerStatus(BreakerState.OPEN, opened_at=now)
        if ok is None:
            return replace(st, probes=st.probes - 1)
        if st.passed + 1 >= cfg.half_open:
            return BreakerStatus(BreakerState.CLOSED)
        return replace(st, probes=st.probes - 1, passed=st.passed + 1)
    return st  # open, or a late outcome of an attempt from before it opened


def parse_duration(value: object) -> float:
    """Seconds from a number or ``"500ms"``, ``"60s"``, ``"2m"``, ``"1h"``; ValueError else."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f"a duration is seconds or a number with ms, s, m or h (60s), "
                         f"not {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and >= 0, not {value!r}")
    return seconds


_BREAKER_KEYS = ("failures", "window", "reset", "half_open", "on_open")


def parse_breaker(value: object) -> Breaker:
    """A declared breaker: ``{failures: 5, window: 60s, reset: 30s, half_open: 1,
    on_open: fail}`` (only ``failures`` is required), or a Breaker."""
    if isinstance(value, Breaker):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"a circuit breaker is a mapping such as {{failures: 5}}, not {value!r}")
    unknown = sorted(set(map(str, value)) - set(_BREAKER_KEYS))
    if unknown:
        from corral._words import suggest

        close = suggest(unknown[0], _BREAKER_KEYS)
        raise ValueError(f"unknown key {unknown[0]!r}"
                         + (f" (did you mean {close!r}?)" if close else
                            f" (one of {', '.join(_BREAKER_KEYS)})"))
    if "failures" not in value:
        raise ValueError("missing key 'failures' (how many failures within window open it)")
    counts = {key: value.get(key, 1) for key in ("failures", "half_open")}
    for key, count in counts.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"{key} must be a whole number >= 1, not {count!r}")
    on_open = value.get("on_open", "fail")
    if on_open not in ("fail", "wait"):
        raise ValueError(f"on_open must be 'fail' or 'wait', not {on_open!r}")
    window = parse_duration(value.get("window", 60.0))
    reset = parse_duration(value.get("reset", 30.0))
    if window <= 0:
        raise ValueError("window must be longer than 0 seconds")
    return Breaker(counts["failures"], window, reset, counts["half_open"], on_open)


class BreakerBook(Protocol):
    """Where breaker state lives: this run (:class:`LocalBreakers`) or a shared store, so that
    runs on one broker share a breaker. Both methods are atomic read-modify-writes of one
    breaker with the pure :func:`ask` and :func:`record`; times in the verdicts are on the
    caller's clock (``now``'s), times inside a returned status on the book's. ``shared``: other
    processes change the state too, so nobody tells this one when a held task may go on."""

    shared: bool

    def ask(self, name: str, cfg: Breaker, now: float) -> tuple[Verdict, BreakerStatus, bool]:
        """:func:`ask`, keeping the new status (a probe counted, time's move to half-open)."""
        ...

    def record(self, name: str, cfg: Breaker, now: float, ok: bool | None, *,
               probe: bool) -> BreakerStatus:
        """:func:`record`, kept; the new status."""
        ...


class LocalBreakers:
    """The breakers of one run, in its process."""

    shared = False

    def __init__(self, names: Iterable[str]) -> None:
        self.status = dict.fromkeys(names, BreakerStatus())
        self._lock = threading.Lock()

    def ask(self, name: str, cfg: Breaker, now: float) -> tuple[Verdict, BreakerStatus, bool]:
        with self._lock:
            verdict, new, probe = ask(cfg, self.status[name], now)
            self.status[name] = new
            return verdict, new, probe

    def record(self, name: str, cfg: Breaker, now: float, ok: bool | None, *,
               probe: bool) -> BreakerStatus:
        with self._lock:
            new = self.status[name] = record(cfg, self.status[name], now, ok, probe=probe)
            return new


POOL_PREFIX = "pool:"
# A pool's breaker unless told otherwise: three crashes in a minute is a broken pool, not bad
# luck (one crash dead-letters an attempt only after several workers died holding it); held,
# not failed, so a pool that is mended (a worker restarted) finishes the run.
POOL_BREAKER = Breaker(failures=3, window=60.0, reset=30.0, half_open=1, on_open="wait")


def parse_pool_breaker(value: object) -> Breaker | None:
    """The fleet's pool breaker as asked for: True (or "on") the default, False, None or
    "off" none, a mapping or ``"failures=5,reset=2m"`` the default with those keys changed
    (the keys of :func:`parse_breaker`); ValueError otherwise."""
    if isinstance(value, Breaker):
        return value
    if value is True or value in ("on", ""):
        return POOL_BREAKER
    if value is False or value is None or value == "off":
        return None
    if isinstance(value, str):
        pairs = [p.partition("=") for p in value.split(",") if p.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ValueError(f"a pool breaker is on, off or KEY=VALUE,... "
                             f"(failures=3,window=60s,reset=30s,half_open=1,on_open=wait), "
                             f"not {value!r}")
        value = {k.strip(): int(v) if v.strip().isdigit() else v.strip() for k, _, v in pairs}
    if not isinstance(value, Mapping):
        raise ValueError(f"a pool breaker is True, False or a mapping such as "
                         f"{{failures: 3}}, not {value!r}")
    defaults = {"failures": POOL_BREAKER.failures, "window": POOL_BREAKER.window,
                "reset": POOL_BREAKER.reset, "half_open": POOL_BREAKER.half_open,
                "on_open": POOL_BREAKER.on_open}
    return parse_breaker({**defaults, **value})


def queue_breakers(queues: Mapping[str, Any] | None,
                   ) -> tuple[dict[str, Breaker | None], list[str]]:
    """The pool breakers the queues' declarations set (``{"gpu": {"breaker": {"failures":
    5}}}``; ``False``: none for that queue), and a message per bad one."""
    given = {name: decl["breaker"] for name, decl in (queues or {}).items()
             if isinstance(decl, Mapping) and decl.get("breaker") is not None}
    return declared(given, parse_pool_breaker, "the pool breaker of queue")


@dataclass(frozen=True, slots=True)
class PoolBreakers:
    """A breaker per queue of the fleet (see the module's note): tasks on ``executors`` (the
    run's executors that send to the fleet) pass ``pool:QUEUE``'s, ``breaker`` unless
    ``queues`` sets that queue's (None: it has none)."""

    executors: frozenset[str]
    breaker: Breaker = POOL_BREAKER
    queues: Mapping[str, Breaker | None] = field(default_factory=dict)

    def names(self, specs: Sequence[TaskSpec], executors: Sequence[str]) -> list[str | None]:
        """Each task's pool breaker (None: it does not run on the fleet, or its queue has
        none)."""
        fleet, queues = self.executors, self.queues
        out: list[str | None] = []
        for s, e in zip(specs, executors, strict=True):
            queue = s.queue or "default"
            on = e in fleet and (queue not in queues or queues[queue] is not None)
            out.append(POOL_PREFIX + queue if on else None)
        return out

    def of(self, name: str) -> Breaker:
        """The breaker of pool breaker ``name`` (``pool:QUEUE``)."""
        return self.queues.get(name.removeprefix(POOL_PREFIX)) or self.breaker


# --------------------------------------------------------------------------- the gate
SHARED_POLL_S = 1.0  # how often a task waiting on a shared half-open breaker asks again


class BreakerChange(NamedTuple):
    """Breaker ``breaker`` entered ``state`` at ``at`` (seconds on the run's clock)."""

    breaker: str
    state: BreakerState
    at: float


REFUSED = object()


class Gate:
    """The scheduler's admission check for tasks with a ``rate_limit`` or a ``breaker``.

    ``check(i, now)`` answers None (admit it now: its limits and the breaker are taken) or
    holds it back, out of the ready queue, until :meth:`release` hands it back: at a time, or
    when a breaker changes. A task an open breaker refuses is *admitted* and listed in
    :attr:`refused` (with a message): the driver fails it at once without running it, through
    the ordinary failure path. :meth:`ended` feeds outcomes to the breakers; :attr:`changes`
    lists breaker transitions for the driver to drain. Breaker state is kept by ``book``
    (default: this run's own); :attr:`status` is each breaker as this gate last saw it.
    """

    def __init__(
        self,
        task_rates: Sequence[tuple[str, ...]],
        task_breakers: Sequence[str | None],
        rates: RateState,
        breakers: Mapping[str, Breaker],
        book: BreakerBook | None = None,
        pools: PoolBreakers | None = None,
        task_pools: Sequence[str | None] | None = None,
    ) -> None:
        self.task_rates = task_rates
        self.task_breakers = task_breakers
        self.task_pools: Sequence[str | None] = task_pools or [None] * len(task_rates)
        self.gated = [bool(r) or b is not None or p is not None for r, b, p in zip(
            task_rates, task_breakers, self.task_pools, strict=True)]
        self.rates = rates
        self.breakers = dict(breakers)
        self.book: BreakerBook = book if book is not None else LocalBreakers(breakers)
        self.status = dict.fromkeys(breakers, BreakerStatus())
        self.pools = pools
        self._pool_book = LocalBreakers(())  # the pools' breakers: this run's own
        self._add_pools(self.task_pools)
        self.refused: dict[int, str] = {}
        self.refused_by: dict[int, str] = {}  # the breaker that refused each of them
        self.changes: list[BreakerChange] = []
        self.holds: dict[int, str] = {}  # why each held task waits, for blocked_reasons
        self._probes: dict[int, tuple[str, ...]] = {}  # task -> breakers it is a probe of
        self._timed: list[tuple[float, int]] = []
        self._rate_holds: dict[int, float] = {}  # task held by a rate limit -> its retry time
        self._due: dict[int, float] = {}  # released by the last release(): their retry time
        # Limits refused at _refused_at: the answer for every task that asks at that same time
        # (a TAT only grows), so that a wake-up releasing many held tasks asks the state once
        # (one round trip to a shared one), not once per task.
        self._refused: dict[tuple[str, ...], float] = {}
        self._refused_at = -math.inf
        self._untimed: list[int] = []
        self._changed = False

    def extend(self, task_rates: Sequence[tuple[str, ...]],
               task_breakers: Sequence[str | None],
               task_pools: Sequence[str | None] | None = None) -> None:
        """Gate the tasks a growing run adds (indices after the ones already known)."""
        task_pools = task_pools or [None] * len(task_rates)
        self.task_rates = [*self.task_rates, *task_rates]
        self.task_breakers = [*self.task_breakers, *task_breakers]
        self.task_pools = [*self.task_pools, *task_pools]
        self.gated += [bool(r) or b is not None or p is not None for r, b, p in zip(
            task_rates, task_breakers, task_pools, strict=True)]
        self._add_pools(task_pools)

    def _add_pools(self, names: Sequence[str | None]) -> None:
        """Make the pool breakers ``names`` (None: none) that are not yet known."""
        pools = self.pools
        for name in {n for n in names if n is not None} - set(self.status):
            assert pools is not None
            self.breakers[name] = pools.of(name)
            self.status[name] = self._pool_book.status[name] = BreakerStatus()

    def _book(self, name: str) -> BreakerBook:
        return self._pool_book if name in self._pool_book.status else self.book

    def _breakers_of(self, i: int) -> tuple[str, ...]:
        """Task ``i``'s breakers: its pool's first (a broken pool holds it before its own
        breaker counts it), then its own."""
        pool, own = self.task_pools[i], self.task_breakers[i]
        if pool is None:
            return () if own is None else (own,)
        return (pool,) if own is None else (pool, own)

    def check(self, i: int, now: float) -> Any:
        """None: admit task ``i`` now. Otherwise it is held (or refused: see the class)."""
        probes: tuple[str, ...] = ()  # the breakers it takes a probe's place of
        pools = self._pool_book.status
        for name in self._breakers_of(i):
            pool = pools.get(name)
            if pool is not None and pool.state is BreakerState.CLOSED:
                continue  # the common case, and the state is this gate's own: nothing to ask
            cfg = self.breakers[name]
            book = self._book(name)
            verdict, new, probe = book.ask(name, cfg, now)  # a probe's place is taken
            self._saw(name, new, now)
            if verdict is not None:
                self._give_back(probes, now)
            if isinstance(verdict, Refuse):
                self.holds.pop(i, None)
                self.refused[i] = _refusal(name, cfg, max(0.0, verdict.until - now))
                self.refused_by[i] = name
                return REFUSED
            if isinstance(verdict, Hold):
                until = verdict.until
                if math.isinf(until) and book.shared:  # others' probes: nobody tells us
                    until = now + SHARED_POLL_S
                return self._hold(i, until, f"waits for circuit breaker {name!r}")
            if probe:
                probes = (*probes, name)
        rates = self.task_rates[i]
        if rates:
            if now != self._refused_at:
                self._refused, self._refused_at = {}, now
            retry_at = self._refused.get(rates)
            if retry_at is None:
                retry_at = self.rates.try_acquire(rates, now, self._due.pop(i, None))
                if retry_at is not None:
                    self._refused[rates] = retry_at
            if retry_at is not None:
                self._give_back(probes, now)  # the probes do not run
                self._rate_holds[i] = retry_at
                return self._hold(i, retry_at, f"waits for rate limit {', '.join(rates)}")
        if probes:
            self._probes[i] = probes
        self.holds.pop(i, None)
        return None

    def _give_back(self, probes: tuple[str, ...], now: float) -> None:
        """The probes' places a task took and will not use (held by what it asked next)."""
        for name in probes:
            self._saw(name, self._book(name).record(name, self.breakers[name], now, None,
                                                    probe=True), now)

    def release(self, now: float) -> list[int]:
        """Held tasks that may be asked about again now. A task a rate limit held is due at
        its retry time only until the next release: one checked in the same admission round
        counts at that time however late the wake-up (see :func:`gcra`); one that waited for
        a slot as well counts when it is checked."""
        out: list[int] = []
        timed = self._timed
        due = self._due = {}
        while timed and timed[0][0] <= now:
            i = heapq.heappop(timed)[1]
            out.append(i)
            if (at := self._rate_holds.pop(i, None)) is not None:
                due[i] = at
        if self._changed:
            self._changed = False
            out.extend(self._untimed)
            self._untimed = []
        return out

    def next_wake(self) -> float | None:
        return self._timed[0][0] if self._timed else None

    def ended(self, i: int, ok: bool | None, now: float, *, infra: bool = False) -> None:
        """An attempt of gated task ``i`` ended: True succeeded, False failed, None neither;
        ``infra``: it failed because the machinery did (its pool's breaker counts only that:
        a task's own failure shows its pool works)."""
        if self.refused.pop(i, None) is not None:
            self.refused_by.pop(i, None)
            return  # it never ran: an open breaker's refusal is not a failure of the service
        probes = self._probes.pop(i, ())
        pools = self._pool_book.status
        for name in self._breakers_of(i):
            outcome = ok
            pool = pools.get(name)
            if pool is not None:
                if ok is False and not infra:
                    outcome = True  # the task's own failure: its pool ran it
                if outcome is not False and pool.state is BreakerState.CLOSED:
                    continue  # nothing to count
            probe = name in probes
            new = self._book(name).record(name, self.breakers[name], now, outcome,
                                          probe=probe)
            if not self._saw(name, new, now) and probe:
                self._changed = True  # a probe slot is free again

    def _saw(self, name: str, status: BreakerStatus, now: float) -> bool:
        """Keep what the book says of breaker ``name``; a new state is a change (made here,
        or, with a shared book, by another run). True if the state changed."""
        changed = status.state is not self.status[name].state
        self.status[name] = status
        if changed:
            self.changes.append(BreakerChange(name, status.state, now))
            self._changed = True
        return changed

    def _hold(self, i: int, until: float, why: str) -> object:
        if math.isinf(until):
            self._untimed.append(i)
        else:
            heapq.heappush(self._timed, (until, i))
        self.holds[i] = why
        return until


def _refusal(name: str, cfg: Breaker, wait: float) -> str:
    """Why an open breaker refused a task, for its ``CircuitOpen``."""
    many = "s" if cfg.failures != 1 else ""
    if name.startswith(POOL_PREFIX):
        return (f"the workers of queue {name.removeprefix(POOL_PREFIX)!r} failed: circuit "
                f"breaker {name!r} is open after {cfg.failures} infrastructure failure{many} "
                f"(workers crashed, attempts dead-lettered) within {cfg.window:g}s; it "
                f"half-opens in {wait:.3g}s")
    return (f"circuit breaker {name!r} is open after {cfg.failures} failure{many} within "
            f"{cfg.window:g}s; it half-opens in {wait:.3g}s")


def declared(
    values: Mapping[str, Any] | None, parse: Any, what: str
) -> tuple[dict[str, Any], list[str]]:
    """Parse each declaration of ``values`` with ``parse``; the parsed ones and, for the others,
    one message each."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in (values or {}).items():
        try:
            out[str(name)] = parse(value)
        except ValueError as exc:
            problems.append(f"{what} {name!r}: {exc}")
    return out, problems


def names_of(value: object) -> tuple[str, ...] | None:
    """A task's ``rate_limit`` option as a tuple of names (None if it is not one or a list)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        items = tuple(value)
        if all(isinstance(v, str) for v in items):
            return items
    return None


def gate_for(
    specs: Sequence[TaskSpec],
    rate_limits: Mapping[str, RateLimit],
    breakers: Mapping[str, Breaker],
    rates: RateState | None = None,
    book: BreakerBook | None = None,
    pools: PoolBreakers | None = None,
    executors: Sequence[str] = (),
) -> Gate | None:
    """The gate of a graph's tasks (``specs``, with the limits and breakers it declares, and
    each one's executor), or None when no task has a rate limit or a breaker, or a pool
    breaker of ``pools``. ``rates`` defaults to a :class:`LocalRates` of ``rate_limits``,
    ``book`` to the run's own breakers."""
    task_pools = pools.names(specs, executors) if pools is not None else None
    if not any(s.rate_limit or s.breaker is not None for s in specs) and not any(
            task_pools or ()):
        return None
    return Gate([s.rate_limit for s in specs], [s.breaker for s in specs],
                rates if rates is not None else LocalRates(rate_limits), breakers, book,
                pools, task_pools)
