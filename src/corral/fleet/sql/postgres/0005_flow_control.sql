-- corral fleet broker, PostgreSQL, version 5: fleet-wide flow control (corral.fleet.limits_postgres).
-- rate_limits: a limit's theoretical arrival time (GCRA), seconds on the server's clock (or a
-- caller's, in tests), NULL when never used; past expires_at it means what no row means.
-- rate_declarations: each run's rate limits, written by its coordinator, read by its workers.
-- breakers: a circuit breaker's status (JSON), closed again past expires_at.

CREATE TABLE rate_limits (
    name text PRIMARY KEY,
    tat double precision,
    expires_at timestamptz
);

CREATE TABLE rate_declarations (
    run_id text NOT NULL,
    name text NOT NULL,
    rate double precision NOT NULL,
    burst integer NOT NULL,
    text text NOT NULL DEFAULT '',
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, name)
);

CREATE TABLE breakers (
    name text PRIMARY KEY,
    status jsonb,
    expires_at timestamptz
);
