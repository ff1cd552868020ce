"""CPU-bound fan-out / fan-in on processes, timed against running the same work serially.

    python examples/cpu_fanout.py [--chunks 16] [--size 400000]

Counts primes below ``size * chunks`` in ``chunks`` slices, one task per slice on the
``process`` executor (one worker per CPU), then sums the counts. The speed-up printed at the
end is over the same function called one slice after another in this process.
"""

from __future__ import annotations

import argparse
import os
import time

import corral


def count_primes(lo: int, hi: int) -> int:
    """Pure-Python trial division: deliberately CPU-bound and GIL-bound."""
    count = 0
    for n in range(max(lo, 2), hi):
        if n % 2 == 0:
            count += n == 2
            continue
        d = 3
        while d * d <= n:
            if n % d == 0:
                break
            d += 2
        else:
            count += 1
    return count


def total(*counts: int) -> int:
    return sum(counts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--size", type=int, default=400_000)
    args = parser.parse_args()
    slices = [(k * args.size, (k + 1) * args.size) for k in range(args.chunks)]

    start = time.perf_counter()
    serial = sum(count_primes(lo, hi) for lo, hi in slices)
    serial_s = time.perf_counter() - start

    dag = corral.DAG("primes")
    parts = [dag.add(count_primes, lo, hi, id=f"slice-{k}", options={"executor": "process"})
             for k, (lo, hi) in enumerate(slices)]
    dag.add(total, *parts, id="total")
    start = time.perf_counter()
    result = dag.run(concurrency=os.cpu_count() or 1)
    parallel_s = time.perf_counter() - start

    assert result.ok, result.to_dict()
    assert result["total"].value == serial
    print(f"{serial} primes below {args.size * args.chunks:,}")
    print(f"serial {serial_s:.2f} s, corral on {os.cpu_count()} processes {parallel_s:.2f} s: "
          f"speed-up {serial_s / parallel_s:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
