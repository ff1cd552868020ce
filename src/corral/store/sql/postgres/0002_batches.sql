-- corral run store, PostgreSQL, version 2: the history packed one row per group commit.
-- A Python step (corral.store._migrations) moves the v1 rows of transitions and task_values
-- into batches, and the v1 snapshots into dags; version 3 then drops the v1 tables.

-- Each distinct DAG once, by runs.dag_hash: a run of the same DAG stores no snapshot, and the
-- runs row that heartbeats rewrite stays small. runs.snapshot is left '{}' from now on.
CREATE TABLE dags (
    hash  text PRIMARY KEY,
    tasks json NOT NULL  -- [[id, deps, fingerprint, executor], ...]
);

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
