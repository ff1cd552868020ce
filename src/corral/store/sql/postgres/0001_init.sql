-- corral run store, PostgreSQL, version 1. Tables follow the connection's search_path.

CREATE TABLE runs (
    id           text PRIMARY KEY,
    pipeline     text NOT NULL,
    status       text NOT NULL,              -- running | succeeded | failed | interrupted | crashed
    dag_hash     text NOT NULL,
    snapshot     jsonb NOT NULL,             -- {"tasks": [{"id", "deps", "fingerprint", "executor"}]}
    params       jsonb NOT NULL,
    source_path  text,
    source_text  text,
    reused       jsonb NOT NULL DEFAULT '[]'::jsonb,
    resumed_from text,
    resumed_by   text,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    host         text NOT NULL,
    user_name    text NOT NULL,
    pid          integer NOT NULL,
    lease_owner  text,
    lease_until  timestamptz
);
CREATE INDEX runs_by_pipeline ON runs (pipeline, started_at DESC);
CREATE INDEX runs_by_status ON runs (status, started_at DESC);

CREATE TABLE transitions (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_id    text NOT NULL,
    state      text NOT NULL,
    attempt    integer NOT NULL,
    at         timestamptz NOT NULL,
    clock      double precision NOT NULL,
    duration_s double precision,
    error      text,
    traceback  text,
    exit_code  integer,
    executor   text,
    worker     text,
    log_path   text
);
CREATE INDEX transitions_by_run ON transitions (run_id, seq);
CREATE INDEX transitions_by_task ON transitions (task_id, state);

CREATE TABLE task_values (
    run_id  text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_id text NOT NULL,
    codec   text NOT NULL,
    size    bigint NOT NULL,
    data    bytea,
    path    text,
    error   text,
    PRIMARY KEY (run_id, task_id)
);

CREATE TABLE events (
    seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id  text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    at      timestamptz NOT NULL,
    kind    text NOT NULL,
    task_id text,
    data    jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX events_by_run ON events (run_id, seq);

-- History is append-only: rows are added, and deleted only with their run (prune).
CREATE FUNCTION corral_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER transitions_append_only BEFORE UPDATE ON transitions
    FOR EACH ROW EXECUTE FUNCTION corral_append_only();
CREATE TRIGGER events_append_only BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION corral_append_only();
