"""What one stored transition costs the SQLite store: a row each (schema 1) or packed (now);
what encoding a commit's transitions costs in each candidate format; and what a recorded run
of a DAG the store has not seen costs over one it has.

    python -m bench.store_rows

Writes 30,000 transitions of a 10,000-task run in 30 group commits of 1,000 (as the recorder
does under load) into a fresh store in a temporary directory, 5 times per layout, and prints
the median microseconds per transition. ``row per transition`` is how schema version 1 stored
history (one ``transitions`` row each, inserted with ``executemany``); ``packed batch`` is
:meth:`corral.store.Store.write` today (one ``batches`` row of JSON per commit).

Encoding: a commit of 1,000 transitions as the recorder packs them, encoded by each candidate
(pickle, as schema versions 2-3 stored them; the standard library's json; orjson, what schema 4
uses; msgpack when installed), best of 5, in microseconds per transition. Wall-clock figures:
take them on a quiet machine, or compare instruction counts (``valgrind --tool=callgrind``).

Then it runs the layered 10k workload (zero-duration thread tasks) recorded in a fresh store,
twice per repetition: the first run also stores the DAG's snapshot (``dags``), the second finds
it there, as ``corral-sqlite`` in ``python -m bench`` does from its second repetition on. Not a
test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

from corral.store import open_store
from corral.store._records import RunRecord, StoredStatus, TaskSnapshot, dag_hash

LAYOUTS = ("row per transition", "packed batch")

V1_RUN = """
INSERT INTO runs (id, pipeline, status, dag_hash, snapshot, params, started_at, host,
                  user_name, pid)
VALUES ('r1', 'bench', 'running', 'h', :snapshot, '{}', :now, 'h', 'u', 1)"""

V1_INSERT = """
INSERT INTO transitions (run_id, task_id, state, attempt, at, clock, duration_s, error,
                         traceback, exit_code, executor, worker, log_path)
VALUES (:run_id, :task_id, :state, :attempt, :at, :clock, :duration_s, :error, :traceback,
        :exit_code, :executor, :worker, :log_path)"""


def measure(layout: str, *, tasks: int = 10_000, rows: int = 30_000, batch: int = 1_000) -> float:
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(f"sqlite:///{folder}/bench.db", migrate=False)
        store.migrate(target=1 if layout == "row per transition" else None)
        snapshot = tuple(TaskSnapshot(f"t{i}", (), "fingerprint", "thread") for i in range(tasks))
        now = datetime.now(UTC)
        if layout == "packed batch":
            store.begin_run(RunRecord(
                id="r1", pipeline="bench", status=StoredStatus.RUNNING, tasks=snapshot,
                params={}, started_at=now, host="h", user="u", pid=1,
                dag_hash=dag_hash(snapshot), lease_owner="bench"), lease_s=30)
        else:  # the run as version 1 stored it, snapshot and all
            with store.connector.transaction() as tx:
                tx.execute(V1_RUN, {"snapshot": json.dumps({"tasks": [
                    {"id": t.id, "deps": [], "fingerprint": t.fingerprint, "executor": t.executor}
                    for t in snapshot]}), "now": now})
        entries = [[f"t{i % tasks}", "running", 1, i * 1e-5] for i in range(rows)]
        start = time.perf_counter()
        for k in range(0, rows, batch):
            chunk = entries[k:k + batch]
            if layout == "packed batch":
                store.write("r1", transitions=chunk, worker="w")
                continue
            with store.connector.transaction() as tx:
                tx.executemany(V1_INSERT, [
                    {"run_id": "r1", "task_id": e[0], "state": e[1], "attempt": e[2],
                     "at": now + timedelta(seconds=e[3]), "clock": e[3], "duration_s": None,
                     "error": None, "traceback": None, "exit_code": None, "executor": "thread",
                     "worker": "w", "log_path": None} for e in chunk])
        elapsed = time.perf_counter() - start
        store.close()
        return elapsed / rows * 1e6


def first_and_again(reps: int) -> tuple[float, float]:
    """Median seconds of a recorded layered-10k run: the DAG's first in a store, and again."""
    import asyncio

    from bench import tasks
    from bench.workloads import catalogue, data_dir, load
    from corral._graph import build_graph
    from corral._options import make_spec
    from corral._runner import Runner
    from corral.store import StoreRecorder

    wl = load(catalogue(data_dir())["w3_layered10k"])
    specs = [make_spec(t, tasks.noop, options={"depends_on": wl.deps[i], "executor": "thread"})
             for i, t in enumerate(wl.ids)]
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as folder:
            store = open_store(f"sqlite:///{folder}/bench.db")
            for k in range(2):
                recorder = StoreRecorder(store)
                runner = Runner(build_graph(specs, name=wl.name), concurrency=wl.concurrency,
                                log_dir=None, listeners=[recorder])
                recorder.attach(runner)
                start = time.perf_counter()
                asyncio.run(runner.run())
                times[k].append(time.perf_counter() - start)
            store.close()
    return statistics.median(times[0]), statistics.median(times[1])


def encodings(reps: int) -> dict[str, float]:
    """Microseconds per transition to encode one commit of 1,000, per candidate format."""
    import json
    import pickle

    import orjson

    entries: list[list[object]] = []
    for i in range(334):
        t = f"t{i}"
        entries += [[t, "ready", 0, i * 1e-4], [t, "running", 1, i * 1e-4 + 1e-5],
                    [t, "succeeded", 1, i * 1e-4 + 2e-5, 1.2345e-5]]
    candidates = {
        "pickle": lambda: pickle.dumps(entries, pickle.HIGHEST_PROTOCOL),
        "json (stdlib)": lambda: json.dumps(entries),
        "orjson": lambda: orjson.dumps(entries).decode(),
    }
    try:
        import msgpack

        candidates["msgpack"] = lambda: msgpack.packb(entries)
    except ImportError:
        pass
    out = {}
    for name, encode in candidates.items():
        best = min(_timed(encode, 50) for _ in range(max(reps, 1)))
        out[name] = best / 50 / len(entries) * 1e6
    return out


def _timed(fn: object, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    for layout in LAYOUTS:
        runs = [measure(layout) for _ in range(args.reps)]
        print(f"{layout:20} {statistics.median(runs):6.2f} us/transition "
              f"(min {min(runs):.2f}, max {max(runs):.2f}, {args.reps} reps)")
    for name, us in encodings(args.reps).items():
        print(f"encode {name:14} {us:6.3f} us/transition")
    first, again = first_and_again(args.reps)
    per_task = (first - again) * 1e6 / 10_000
    print(f"recorded layered 10k: first run of the DAG {first * 1e3:.0f} ms, "
          f"again {again * 1e3:.0f} ms ({per_task:.1f} us/task to store the DAG; "
          f"{args.reps} reps)")


if __name__ == "__main__":
    main()
