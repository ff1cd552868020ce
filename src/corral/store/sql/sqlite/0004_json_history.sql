-- corral run store, SQLite, version 4: no pickles. The history of a batch is JSON text, task
-- values are JSON (or, where a store opted in, signed pickles inside the JSON), and runs record
-- their owner's process for the takeover of dead runs (corral.store._owner).
-- A Python step (corral.store._migrations) converts the version-3 rows of batches_v3 with an
-- unpickler that refuses every global, then drops batches_v3.

DROP TRIGGER batches_append_only;
DROP INDEX batches_by_run;
ALTER TABLE batches RENAME TO batches_v3;

CREATE TABLE batches (
    seq         INTEGER PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    worker      TEXT,                 -- who wrote it (host:pid), unless an entry names another
    transitions TEXT NOT NULL,        -- JSON [[task_id, state, attempt, clock, duration_s,
                                      --        error, traceback, exit_code, log_path, worker]]
                                      -- with trailing nulls left out (corral.store._records)
    durations   TEXT,                 -- JSON {task_id: seconds} of attempts that succeeded here
    task_values TEXT                  -- JSON [[task_id, format, ...]] (corral.store._codec)
);
CREATE INDEX batches_by_run ON batches (run_id, seq);

CREATE TRIGGER batches_append_only BEFORE UPDATE ON batches
BEGIN
    SELECT RAISE(ABORT, 'batches are append-only');
END;

-- <boot id>/<pid namespace>/<pid>/<start time> of the lease owner, where it could be read.
ALTER TABLE runs ADD COLUMN owner_process TEXT;
-- The run's log folder (absolute): its transitions name their log files relative to it.
ALTER TABLE runs ADD COLUMN log_dir TEXT;
