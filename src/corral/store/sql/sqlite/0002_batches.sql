-- corral run store, SQLite, version 2: the history packed one row per group commit.
-- The v1 rows of transitions and task_values are moved into batches by a Python step
-- (corral.store._migrations), then version 3 drops the v1 tables.

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
