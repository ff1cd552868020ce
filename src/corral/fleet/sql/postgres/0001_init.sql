-- corral fleet broker, PostgreSQL, version 1. Tables follow the connection's search_path: the
-- broker sets it to its own schema (corral_fleet, or ?schema=NAME in the broker's URL).

-- Who the broker is: made anew with the schema (a schema dropped and made again has lost its
-- queues, and coordinators send what they have in flight again).
CREATE TABLE meta (
    epoch text NOT NULL
);
INSERT INTO meta (epoch) VALUES (md5(random()::text || clock_timestamp()::text));

-- Attempts to run, one row each until finished (then deleted with their outcome posted).
CREATE TABLE jobs (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- the entry; claim order
    queue      text NOT NULL,
    attempt    text NOT NULL UNIQUE,       -- the attempt's id: queued once however often sent
    run_id     text NOT NULL,
    task_id    text NOT NULL,
    executor   text NOT NULL,
    reply      text NOT NULL,
    body       bytea NOT NULL,             -- the pickled AttemptBody
    resources  jsonb,                      -- {"gpu": 1.0}, or NULL
    max_value  bigint NOT NULL,
    worker     text,                       -- who holds it; NULL: free to claim
    deliveries integer NOT NULL DEFAULT 0, -- how often it was handed out
    renewed_at timestamptz                 -- its holder's last beat ('-infinity': handed back)
);
CREATE INDEX jobs_free ON jobs (queue, id) WHERE worker IS NULL;
CREATE INDEX jobs_held ON jobs (renewed_at) WHERE worker IS NOT NULL;

-- The coordinators' reply streams: START, OUTPUT, BEAT, END; deleted once read.
CREATE TABLE events (
    seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reply   text NOT NULL,
    kind    text NOT NULL,
    attempt text NOT NULL,
    worker  text NOT NULL,
    data    bytea NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_by_reply ON events (reply, seq);

-- Attempts finished (done) or given up on by their coordinator (not done); a day.
CREATE TABLE marks (
    attempt text PRIMARY KEY,
    done    boolean NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX marks_by_age ON marks (at);  -- what the daily tidy-up drops

CREATE TABLE dead_letters (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    attempt    text NOT NULL,
    run_id     text NOT NULL,
    task_id    text NOT NULL,
    queue      text NOT NULL,
    executor   text NOT NULL,
    reply      text NOT NULL,
    body       bytea NOT NULL,
    resources  jsonb,
    max_value  bigint NOT NULL,
    reason     text NOT NULL,
    history    jsonb NOT NULL,
    deliveries integer NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);

-- Each worker's heartbeat row: what it said of itself at its last beat.
CREATE TABLE workers (
    id          text PRIMARY KEY,
    host        text NOT NULL,
    pid         integer NOT NULL,
    queues      text[] NOT NULL,
    concurrency integer NOT NULL,
    resources   jsonb NOT NULL,
    running     integer NOT NULL,
    done        bigint NOT NULL,
    started_at  double precision NOT NULL,  -- epoch seconds, the worker's clock
    last_beat   double precision NOT NULL,  -- epoch seconds, the worker's clock
    state       text NOT NULL,
    beat_at     timestamptz NOT NULL DEFAULT now()  -- the server's clock: listed for an hour
);

-- One coordinator per run, with a fencing token per coordinator that took the lease.
CREATE TABLE leases (
    run_id text PRIMARY KEY,
    holder text,                 -- NULL: released
    until  timestamptz NOT NULL,
    fence  bigint NOT NULL
);
