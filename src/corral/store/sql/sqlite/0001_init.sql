-- corral run store, SQLite, version 1.
-- Timestamps are REAL seconds since the epoch (UTC); JSON columns are TEXT.

CREATE TABLE runs (
    id           TEXT PRIMARY KEY,
    pipeline     TEXT NOT NULL,
    status       TEXT NOT NULL,              -- running | succeeded | failed | interrupted | crashed
    dag_hash     TEXT NOT NULL,
    snapshot     TEXT NOT NULL,              -- {"tasks": [{"id", "deps", "fingerprint", "executor"}]}
    params       TEXT NOT NULL,              -- {"name": "value"}
    source_path  TEXT,                       -- the pipeline file, to rebuild the DAG on resume
    source_text  TEXT,
    reused       TEXT NOT NULL DEFAULT '[]', -- task ids that started as succeeded (resume)
    resumed_from TEXT,
    resumed_by   TEXT,
    started_at   REAL NOT NULL,
    finished_at  REAL,
    host         TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    lease_owner  TEXT,
    lease_until  REAL
);
CREATE INDEX runs_by_pipeline ON runs (pipeline, started_at DESC);
CREATE INDEX runs_by_status ON runs (status, started_at DESC);

CREATE TABLE transitions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_id    TEXT NOT NULL,
    state      TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    at         REAL NOT NULL,
    clock      REAL NOT NULL,                -- seconds on the run's own clock
    duration_s REAL,                         -- set when an attempt ends
    error      TEXT,
    traceback  TEXT,
    exit_code  INTEGER,
    executor   TEXT,
    worker     TEXT,
    log_path   TEXT
);
CREATE INDEX transitions_by_run ON transitions (run_id, seq);
CREATE INDEX transitions_by_task ON transitions (task_id, state);

CREATE TABLE task_values (
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_id TEXT NOT NULL,
    codec   TEXT NOT NULL,
    size    INTEGER NOT NULL,
    data    BLOB,                            -- inline when at most the store's value limit
    path    TEXT,                            -- else the file holding it
    error   TEXT,                            -- why the value could not be stored
    PRIMARY KEY (run_id, task_id)
);

CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    at      REAL NOT NULL,
    kind    TEXT NOT NULL,
    task_id TEXT,
    data    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_run ON events (run_id, seq);

-- History is append-only: rows are added, and deleted only with their run (prune).
CREATE TRIGGER transitions_append_only BEFORE UPDATE ON transitions
BEGIN
    SELECT RAISE(ABORT, 'transitions are append-only');
END;
CREATE TRIGGER events_append_only BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
