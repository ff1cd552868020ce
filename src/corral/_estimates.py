"""Duration estimates learned while a run goes, per task kind (see :mod:`corral._kinds`).

The scheduler orders ready tasks by upward rank, which is only as good as the durations it is
computed from. Before a run a task's duration is its *prior*: its ``estimate`` option, else
the store's history of it, else unknown. As attempts succeed, :class:`OnlineEstimates` learns:

- a task **without a prior** is expected to take the mean of the finished tasks of its kind,
  else of its family (the same action), else of every task finished so far, else 1 s (before
  anything has finished every unknown task weighs the same, so ranks count tasks on the path);
- a task **with a prior** keeps it, scaled by how the finished tasks of its kind compared
  with their own priors today (history wins; a kind that got slower today is refined).

:meth:`learn` is on the scheduler's hot path (one call per successful attempt): a few list
updates and one comparison. It answers whether an estimate that ranks pending tasks moved by
more than :data:`CHANGE` since the ranks were last computed; computing them again
(:meth:`durations`) is left to the scheduler, which bounds how often it does.
"""

from __future__ import annotations

from collections.abc import Sequence

# Seconds assumed for a task with no prior while nothing has finished: any constant gives the
# same ranks (the number of tasks on the longest path below the task).
from corral._plan import DEFAULT_ESTIMATE

__all__ = ["CHANGE", "OnlineEstimates"]

# An estimate must move by more than this fraction of what the ranks assumed before the ranks
# are worth computing again (python -m bench.simulate: 0.05, 0.2 and 0.5 give the same
# makespans on every workload; fewer re-ranks the higher it is).
CHANGE = 0.2


class OnlineEstimates:
    """Learns durations per kind. ``kinds``/``families`` from :func:`corral._kinds.task_kinds`;
    ``prior`` per task: seconds (an estimate, or history), or None where unknown.

    For the scheduler: :meth:`learn` on each success, :meth:`durations` to rank again."""

    __slots__ = (
        "_assumed_mean", "_assumed_ratio", "_count", "_family", "_family_count",
        "_family_left", "_family_sum", "_kind", "_left", "_observed", "_prior", "_prior_sum",
        "_sum", "_total", "_total_count",
    )

    def __init__(
        self, kinds: Sequence[int], families: Sequence[int], prior: Sequence[float | None]
    ) -> None:
        n_kinds = max(kinds, default=-1) + 1
        n_families = max(families, default=-1) + 1
        self._kind = kinds
        self._family = families
        self._prior = prior
        # Tasks without a prior: the sum and count of their durations, per kind and family.
        self._sum = [0.0] * n_kinds
        self._count = [0] * n_kinds
        self._family_sum = [0.0] * n_families
        self._family_count = [0] * n_families
        self._total = 0.0
        self._total_count = 0
        # Tasks with a prior: what they took and what their prior said, per kind.
        self._observed = [0.0] * n_kinds
        self._prior_sum = [0.0] * n_kinds
        # Tasks of each kind and family not yet learned from: whether a change matters.
        self._left = [0] * n_kinds
        for k in kinds:
            self._left[k] += 1
        self._family_left = [0] * n_families
        for f in families:
            self._family_left[f] += 1
        # What the ranks last assumed: the mean per kind (None: not known then) and the ratio
        # of today to the priors per kind.
        self._assumed_mean: list[float | None] = [None] * n_kinds
        self._assumed_ratio = [1.0] * n_kinds

    @staticmethod
    def worth_learning(kinds: Sequence[int], prior: Sequence[float | None]) -> bool:
        """False when nothing learned could change the order: every task one kind, and either
        all or none of them with a prior (every estimate then moves by the same factor)."""
        if len(set(kinds)) > 1:
            return True
        known = sum(p is not None for p in prior)
        return 0 < known < len(prior)

    def learn(self, i: int, seconds: float) -> bool:
        """Task ``i`` succeeded in ``seconds``. True when the ranks are now worth computing
        again: its kind's estimate moved by more than :data:`CHANGE` and tasks of that kind (or,
        for a first measure, of its family) are still to run."""
        if seconds < 0.0 or i >= len(self._kind):
            return False  # a clock that stepped back; a task added after the learner was made
        k = self._kind[i]
        f = self._family[i]
        left = self._left[k] = self._left[k] - 1
        family_left = self._family_left[f] = self._family_left[f] - 1
        self._total += seconds
        self._total_count += 1
        prior = self._prior[i]
        if prior is None:
            s = self._sum[k] = self._sum[k] + seconds
            c = self._count[k] = self._count[k] + 1
            first_of_family = self._family_count[f] == 0
            self._family_sum[f] += seconds
            self._family_count[f] += 1
            if left:
                before = self._assumed_mean[k]
                if before is None:
                    return True
                return abs(s / c - before) > CHANGE * before
            return first_of_family and family_left > 0
        o = self._observed[k] = self._observed[k] + seconds
        p = self._prior_sum[k] = self._prior_sum[k] + prior
        if not left or p <= 0.0:
            return False
        before = self._assumed_ratio[k]
        return abs(o / p - before) > CHANGE * before

    def durations(self) -> list[float]:
        """Every task's expected duration now; the ranks computed from them are what later
        changes are measured against."""
        kind_mean: list[float | None] = [
            s / c if c else None for s, c in zip(self._sum, self._count, strict=True)
        ]
        ratio = [o / p if p > 0.0 else 1.0
                 for o, p in zip(self._observed, self._prior_sum, strict=True)]
        family_mean = [s / c if c else None
                       for s, c in zip(self._family_sum, self._family_count, strict=True)]
        default = self._total / self._total_count if self._total_count else DEFAULT_ESTIMATE
        self._assumed_mean = kind_mean
        self._assumed_ratio = ratio
        out: list[float] = []
        append = out.append
        for i, prior in enumerate(self._prior):
            k = self._kind[i]
            if prior is not None:
                append(prior * ratio[k])
                continue
            mean = kind_mean[k]
            if mean is None:
                mean = family_mean[self._family[i]]
                if mean is None:
                    mean = default
            append(mean)
        return out
