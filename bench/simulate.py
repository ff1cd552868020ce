"""How well corral orders tasks, by simulation: the real scheduler, a simulated clock.

``python -m bench.simulate`` replays every sleep workload (``w4_sleep300`` and the WfCommons
workflow traces) through :class:`corral._scheduler.Scheduler` itself — its admission, its
ready order, what it learns per task kind as attempts succeed and its re-ranks — with each
task taking exactly its duration from the file (workflows divided by the benchmark's scale,
as ``python -m bench`` runs them) and no overhead. It compares the makespans with the two
list schedules of the data's ``bounds.py`` at the same width, on the same scaled durations
(:func:`list_schedules`): FIFO ready order, and rank_u (critical-path priority computed from
the true durations).

Cases per workload:

- **first run**: no ``estimate`` and no history: the structural fallback (ranks count tasks,
  equal ranks in arrival order), then durations learned per kind once the run has lasted one
  re-rank gap, each re-rank keeping rank order only where a play of the rest of the run says
  it ends more than 1% sooner than arrival order (:mod:`corral._lookahead`; the column
  *re-ranks (rank kept)*) — what a person trying corral gets;
- **fallback only**: the same with learning off (what the order is worth before anything is
  known);
- **history**: every task's prior is its true duration (a history of identical earlier runs),
  learning on (it refines, never replaces, a history).

Targets (issue 17): first run <= 1.05x rank_u and <= 1.00x FIFO on every workload; history
<= 1.02x rank_u. ``--check`` exits 1 when one is missed. Everything here is deterministic (no
wall clock): the figures may be quoted as they are.
"""

from __future__ import annotations

import argparse
import heapq
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import tasks
from bench.workloads import Workload, bounds_module, catalogue, data_dir, load

__all__ = ["Case", "list_schedules", "main", "simulate"]

FIRST_RUN_VS_RANK = 1.05
FIRST_RUN_VS_FIFO = 1.00
HISTORY_VS_RANK = 1.02
# Ratios are shown to four decimals and compared with the targets exactly: montage's and
# soykb's first runs are 1.0002x and 1.0003x FIFO, misses the check reports.
DIGITS = 4


@dataclass(frozen=True)
class Case:
    """One simulated run: its makespan (seconds, scaled as the benchmark runs it), how many
    times the scheduler re-ranked, and how many of those kept rank order (the others found it
    would not end the run sooner: arrival order, :mod:`corral._lookahead`)."""

    makespan: float
    reranks: int
    ranked: int


def simulate(
    wl: Workload, *, estimates: Sequence[float | None] | None, learn: bool
) -> Case:
    """Run ``wl`` through the real scheduler on a simulated clock (no overhead)."""
    from corral._graph import build_graph
    from corral._options import make_spec
    from corral._scheduler import Scheduler

    specs = [make_spec(task_id, tasks.sleep, args=(wl.durations[i],),
                       options={"depends_on": wl.deps[i]})
             for i, task_id in enumerate(wl.ids)]
    graph = build_graph(specs, name=wl.name)
    prior = estimates if estimates is not None else [None] * len(graph)
    sched = Scheduler(graph, concurrency=wl.concurrency, estimates=prior, learn=learn)
    seconds = wl.durations  # tasks keep their definition order in the graph
    running: list[tuple[float, int]] = []
    now = 0.0
    while sched.is_active():
        for i in sched.admit(now):
            heapq.heappush(running, (now + seconds[i], i))
        if not running:
            raise RuntimeError(f"{wl.name}: the simulated run stalled")
        now = running[0][0]
        while running and running[0][0] <= now:
            sched.succeeded(heapq.heappop(running)[1], now)
    return Case(now, sched.reranks, sched.ranked_reranks)


def list_schedules(wl: Workload, data: Path) -> tuple[float, float]:
    """The makespans of the data's two list schedules (``bounds.py``: FIFO, rank_u) on the
    durations the simulation runs, already scaled. Not the catalogue's figures, which
    ``bounds.py`` computes on the unscaled seconds and divides: sums of other floats order
    some tasks that end together differently (epigenomics' FIFO is 3.3994 s one way, 3.4012 s
    the other), and the comparison must be with the same numbers."""
    index = {task_id: i for i, task_id in enumerate(wl.ids)}
    preds = [[index[d] for d in deps] for deps in wl.deps]
    succs: list[list[int]] = [[] for _ in wl.ids]
    for i, ps in enumerate(preds):
        for p in ps:
            succs[p].append(i)
    bounds = bounds_module(data)
    durations, width = wl.durations, wl.concurrency
    _, rank_u, _ = bounds.levels(durations, preds, succs, bounds.topo_order(preds, succs))
    return (bounds.simulate(durations, preds, succs, width),
            bounds.simulate(durations, preds, succs, width, priority=rank_u))


def _row(wl: Workload, data: Path) -> dict[str, float]:
    info = wl.info
    fifo, rank = list_schedules(wl, data)
    first = simulate(wl, estimates=None, learn=True)
    fallback = simulate(wl, estimates=None, learn=False)
    history = simulate(wl, estimates=wl.durations, learn=True)
    return {
        "tasks": len(wl.ids), "lb": info.bounds["lb"], "fifo": fifo, "rank": rank,
        "first": first.makespan, "first_reranks": first.reranks,
        "first_ranked": first.ranked,
        "fallback": fallback.makespan, "history": history.makespan,
        "history_reranks": history.reranks,
    }


def _ratio(a: float, b: float) -> float:
    return round(a / b, DIGITS) if b else 1.0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.simulate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="workload data (default: ../shared/bench)")
    ap.add_argument("--workloads", help="comma-separated names (default: every sleep workload)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    data = data_dir(args.data)
    bounds_module(data)  # fail early, with the data's own message, when bounds.py is missing
    infos = [i for i in catalogue(data).values() if i.kind == "sleep"]
    if args.workloads:
        wanted = set(args.workloads.split(","))
        unknown = wanted - {i.name for i in infos}
        if unknown:
            ap.error(f"not a sleep workload: {', '.join(sorted(unknown))}")
        infos = [i for i in infos if i.name in wanted]
    print("| workload | tasks | FIFO (s) | rank_u (s) | first run (s) | x rank_u | x FIFO "
          "| re-ranks (rank kept) | fallback only x rank_u | x FIFO | history x rank_u |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    missed: list[str] = []
    for info in infos:
        r = _row(load(info), data)
        first_rank, first_fifo = _ratio(r["first"], r["rank"]), _ratio(r["first"], r["fifo"])
        history_rank = _ratio(r["history"], r["rank"])
        print(f"| {info.name} | {r['tasks']:.0f} | {r['fifo']:.3f} | {r['rank']:.3f} "
              f"| {r['first']:.3f} | {first_rank:.4f} | {first_fifo:.4f} "
              f"| {r['first_reranks']:.0f} ({r['first_ranked']:.0f}) "
              f"| {_ratio(r['fallback'], r['rank']):.4f} "
              f"| {_ratio(r['fallback'], r['fifo']):.4f} | {history_rank:.4f} |")
        for what, ratio, against, target in (
            ("first run", first_rank, "rank_u", FIRST_RUN_VS_RANK),
            ("first run", first_fifo, "FIFO", FIRST_RUN_VS_FIFO),
            ("history", history_rank, "rank_u", HISTORY_VS_RANK),
        ):
            if ratio > target:
                missed.append(f"{info.name}: {what} {ratio}x {against} > {target}")
    sys.stdout.flush()
    for line in missed:
        print(f"missed: {line}", file=sys.stderr)
    return 1 if missed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
