-- corral run store, PostgreSQL, version 2: the history packed one row per group commit.
-- The v1 rows of transitions and task_values are moved into batches by a Python step
-- (corral.store._migrations), then version 3 drops the v1 tables.

CREATE TABLE batches (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    worker      text,                 -- who wrote it (host:pid), unless an entry names another
    transitions bytea NOT NULL,       -- pickle [[task_id, state, attempt, clock, duration_s,
                                      --          error, traceback, exit_code, log_path, worker]]
                                      -- with trailing nulls left out (corral.store._base)
    durations   bytea,                -- pickle {task_id: seconds} of attempts that succeeded here
    task_values bytea                 -- pickle [(task_id, codec, size, data, path, error), ...]
);
CREATE INDEX batches_by_run ON batches (run_id, seq);

CREATE TRIGGER batches_append_only BEFORE UPDATE ON batches
    FOR EACH ROW EXECUTE FUNCTION corral_append_only();
