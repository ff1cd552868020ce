"""What one stored transition costs the SQLite store, and which part of the schema costs it.

    python -m bench.store_rows             # the schema as it is, and with its costs removed

Writes 30,000 transitions of a 10,000-task run in 30 group commits of 1,000 (as the recorder
does under load) into a fresh store in a temporary directory, 5 times per variant, and prints
the median microseconds per row. Variants drop the ``transitions_by_task`` index and/or turn
off foreign-key enforcement on that connection only, to show what each costs. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

from corral._spec import TaskState
from corral.store import open_store
from corral.store._base import RunRecord, StoredStatus, TaskSnapshot, TransitionRecord, dag_hash

VARIANTS = ("as is", "no task index", "no foreign keys", "neither")


def measure(variant: str, *, tasks: int = 10_000, rows: int = 30_000, batch: int = 1_000) -> float:
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(f"sqlite:///{folder}/bench.db")
        conn = store.connector.connection  # type: ignore[attr-defined]
        if variant in ("no task index", "neither"):
            conn.execute("DROP INDEX transitions_by_task")
        if variant in ("no foreign keys", "neither"):
            conn.execute("PRAGMA foreign_keys = OFF")
        snapshot = tuple(TaskSnapshot(f"t{i}", (), "fingerprint", "thread") for i in range(tasks))
        now = datetime.now(UTC)
        store.begin_run(RunRecord(
            id="r1", pipeline="bench", status=StoredStatus.RUNNING, tasks=snapshot, params={},
            started_at=now, host="h", user="u", pid=1, dag_hash=dag_hash(snapshot),
            source_path=None, source_text=None, reused=(), resumed_from=None,
            lease_owner="bench"), lease_s=30)
        records = [TransitionRecord(task_id=f"t{i % tasks}", state=TaskState.RUNNING, attempt=1,
                                    at=now + timedelta(seconds=i * 1e-5), clock=i * 1e-5,
                                    executor="thread", worker="w") for i in range(rows)]
        start = time.perf_counter()
        for k in range(0, rows, batch):
            store.write("r1", transitions=records[k:k + batch])
        elapsed = time.perf_counter() - start
        store.close()
        return elapsed / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    for variant in VARIANTS:
        runs = [measure(variant) for _ in range(args.reps)]
        print(f"{variant:16} {statistics.median(runs):6.1f} us/row "
              f"(min {min(runs):.1f}, max {max(runs):.1f}, {args.reps} reps)")


if __name__ == "__main__":
    main()
