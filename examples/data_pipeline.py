"""A Python data pipeline: data passing between tasks, retries, async I/O and a process.

    python examples/data_pipeline.py

``fetch`` fails on its first attempts, as a flaky network call would, and is retried with
exponential backoff; ``clean`` receives what ``fetch`` returned; the two summaries run in
parallel; ``report`` joins them.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics

import corral

dag = corral.DAG("data")
attempts = {"fetch": 0}


@dag.task(retries=3, retry_delay=0.2, retry_backoff=2, timeout=5)
async def fetch(n: int) -> list[float]:
    """Pretend to download ``n`` readings; the first two calls fail."""
    attempts["fetch"] += 1
    await asyncio.sleep(0.05)
    if attempts["fetch"] < 3:
        raise ConnectionError(f"flaky upstream (attempt {attempts['fetch']})")
    rng = random.Random(42)
    return [rng.gauss(20.0, 5.0) for _ in range(n)] + [float("nan"), 1e9]


@dag.task
def clean(readings: list[float]) -> list[float]:
    """Drop missing values and absurd outliers."""
    return [r for r in readings if not math.isnan(r) and abs(r) < 1000]


@dag.task
def describe(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "mean": statistics.fmean(values), "stdev": statistics.stdev(values)}


@dag.task(executor="process")
def histogram(values: list[float], bins: int = 8) -> list[int]:
    """CPU work in another process: the values travel there and the counts come back."""
    lo, hi = min(values), max(values)
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
    return counts


@dag.task
def report(stats: dict[str, float], counts: list[int]) -> str:
    bars = "\n".join(f"  {'#' * (c * 40 // max(counts))}" for c in counts)
    return f"{stats['n']:.0f} readings, mean {stats['mean']:.2f}, sd {stats['stdev']:.2f}\n{bars}"


if __name__ == "__main__":
    values = clean(fetch(2000))
    report(describe(values), histogram(values, bins=10))
    result = dag.run(concurrency=4)
    for task_id, task in result.items():
        print(f"{task_id:10} {task.state:10} attempts={task.attempts}")
    print(result["report"].value if result.ok else result.to_dict())
    raise SystemExit(0 if result.ok else 1)
