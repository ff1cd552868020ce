-- Named queries of the PostgreSQL store. Each starts with "-- name: <name>"; parameters are
-- %(name)s. Leases use the server's clock, so that hosts with skewed clocks agree.

-- name: schema_version_exists
SELECT count(*) AS n FROM pg_tables
 WHERE schemaname = current_schema() AND tablename = 'schema_version';

-- name: schema_version_create
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL
);

-- name: schema_version_current
SELECT coalesce(max(version), 0) AS version FROM schema_version;

-- name: schema_version_insert
INSERT INTO schema_version (version, applied_at) VALUES (%(version)s, %(now)s);

-- name: migration_lock
-- One migrator per schema at a time; released when the transaction ends.
SELECT pg_advisory_xact_lock(hashtext('corral:' || current_schema()));

-- name: insert_run
INSERT INTO runs (id, pipeline, status, dag_hash, snapshot, params, source_path, source_text,
                  reused, resumed_from, started_at, host, user_name, pid, lease_owner, lease_until,
                  owner_process, log_dir)
VALUES (%(id)s, %(pipeline)s, 'running', %(dag_hash)s, '{}'::jsonb, %(params)s::jsonb,
        %(source_path)s, %(source_text)s, %(reused)s::jsonb, %(resumed_from)s, %(started_at)s,
        %(host)s, %(user_name)s, %(pid)s, %(lease_owner)s,
        clock_timestamp() + make_interval(secs => %(lease_s)s), %(owner_process)s,
        %(log_dir)s);

-- name: dag_known
SELECT count(*) AS n FROM dags WHERE hash = %(hash)s;

-- name: insert_dag
INSERT INTO dags (hash, tasks) VALUES (%(hash)s, %(tasks)s) ON CONFLICT (hash) DO NOTHING;

-- name: get_dags
SELECT hash, tasks FROM dags WHERE hash = ANY(%(hashes)s::text[]);

-- name: claim_run
-- Hand an unfinished run over to the run resuming it: only one claimant wins, and only once
-- the run's lease no longer holds: it lapsed, or its owner is the process gone_owner names,
-- which the claimant found gone (corral.store._owner: an identity names one process for
-- ever, so that check needs no lock). A run that never recorded its end is marked crashed.
UPDATE runs
   SET resumed_by = %(new_id)s,
       status = CASE WHEN status = 'running' THEN 'crashed' ELSE status END,
       lease_until = NULL
 WHERE id = %(old_id)s
   AND resumed_by IS NULL
   AND status <> 'succeeded'
   AND (lease_until IS NULL OR lease_until < clock_timestamp()
        OR owner_process = %(gone_owner)s::text)
RETURNING id;

-- name: renew_lease
UPDATE runs SET lease_until = clock_timestamp() + make_interval(secs => %(lease_s)s)
 WHERE id = %(id)s AND lease_owner = %(owner)s AND finished_at IS NULL;

-- name: finish_run
UPDATE runs SET status = %(status)s, finished_at = %(finished_at)s, lease_until = NULL
 WHERE id = %(id)s;

-- name: insert_batch
INSERT INTO batches (run_id, worker, transitions, durations, task_values)
VALUES (%(run_id)s, %(worker)s, %(transitions)s, %(durations)s, %(task_values)s);

-- name: insert_event
INSERT INTO events (run_id, at, kind, task_id, data)
VALUES (%(run_id)s, %(at)s, %(kind)s, %(task_id)s, %(data)s::jsonb);

-- name: get_run
SELECT *, coalesce(lease_until > clock_timestamp(), false) AS lease_live
  FROM runs WHERE id = %(id)s;

-- name: run_batches
SELECT seq, worker, transitions, task_values FROM batches WHERE run_id = %(id)s ORDER BY seq;

-- name: run_events
SELECT * FROM events WHERE run_id = %(id)s ORDER BY seq;

-- name: latest_unfinished
SELECT *, coalesce(lease_until > clock_timestamp(), false) AS lease_live FROM runs
 WHERE pipeline = %(pipeline)s
   AND resumed_by IS NULL
   AND status IN ('running', 'failed', 'interrupted', 'crashed')
 ORDER BY started_at DESC, id DESC
 LIMIT 1;

-- name: list_runs
-- By observed status: a 'running' run whose lease no longer holds died, and is listed as
-- crashed. A lease also stops holding when its owner is gone, which only Python can tell
-- (corral.store._owner): for 'running' and 'crashed' the manager filters what this returns.
SELECT *, coalesce(lease_until > clock_timestamp(), false) AS lease_live FROM runs
 WHERE (%(status)s::text IS NULL
        OR (%(status)s::text = 'running' AND status = 'running'
            AND coalesce(lease_until > clock_timestamp(), false))
        OR (%(status)s::text = 'crashed' AND status IN ('crashed', 'running'))
        OR (%(status)s::text NOT IN ('running', 'crashed') AND status = %(status)s::text))
   AND (%(pipeline)s::text IS NULL OR pipeline = %(pipeline)s::text)
 ORDER BY started_at DESC, id DESC
 LIMIT %(limit)s;

-- name: recent_durations
-- The durations of the attempts that succeeded in the pipeline's latest runs (for estimates).
SELECT b.run_id, b.durations FROM batches AS b
 WHERE b.durations IS NOT NULL
   AND b.run_id IN (SELECT id FROM runs WHERE pipeline = %(pipeline)s
                     ORDER BY started_at DESC LIMIT %(runs)s)
 ORDER BY b.seq DESC;

-- name: prune_runs
DELETE FROM runs
 WHERE coalesce(finished_at, started_at) < %(cutoff)s
   AND (lease_until IS NULL OR lease_until < clock_timestamp())
RETURNING id;

-- name: prune_dags
DELETE FROM dags WHERE hash NOT IN (SELECT dag_hash FROM runs);
