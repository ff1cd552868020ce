-- corral run store, SQLite, version 2: the history packed one row per group commit.
-- A Python step (corral.store._migrations) moves the v1 rows of transitions and task_values
-- into batches, and the v1 snapshots into dags; version 3 then drops the v1 tables.

-- Each distinct DAG once, by runs.dag_hash: a run of the same DAG stores no snapshot, and the
-- runs row that heartbeats rewrite stays small. runs.snapshot is left '{}' from now on.
CREATE TABLE dags (
    hash  TEXT PRIMARY KEY,
    tasks TEXT NOT NULL  -- [[id, deps, fingerprint, executor], ...]
);

CREATE TABLE batches (
    seq         INTEGER PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    worker      TEXT,                 -- who wrote it (host:pid), unless an entry names another
    transitions BLOB NOT NULL,        -- pickle [[task_id, state, attempt, clock, duration_s,
                                      --          error, traceback, exit_code, log_path, worker]]
                                      -- with trailing nulls left out (corral.store._base)
    durations   BLOB,                 -- pickle {task_id: seconds} of attempts that succeeded here
    task_values BLOB                  -- pickle [(task_id, codec, size, data, path, error), ...]
);
CREATE INDEX batches_by_run ON batches (run_id, seq);

CREATE TRIGGER batches_append_only BEFORE UPDATE ON batches
BEGIN
    SELECT RAISE(ABORT, 'batches are append-only');
END;
