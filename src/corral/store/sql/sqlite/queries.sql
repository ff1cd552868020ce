-- Named queries of the SQLite store. Each starts with "-- name: <name>"; parameters are :name.
-- Times are seconds since the epoch; the connector converts datetimes to them.

-- name: schema_version_exists
SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'schema_version';

-- name: schema_version_create
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    applied_at REAL NOT NULL
);

-- name: schema_version_current
SELECT coalesce(max(version), 0) AS version FROM schema_version;

-- name: schema_version_insert
INSERT INTO schema_version (version, applied_at) VALUES (:version, :now);

-- name: migration_lock
-- BEGIN IMMEDIATE already holds the write lock.
SELECT 1;

-- name: insert_run
INSERT INTO runs (id, pipeline, status, dag_hash, snapshot, params, source_path, source_text,
                  reused, resumed_from, started_at, host, user_name, pid, lease_owner, lease_until,
                  owner_process, log_dir)
VALUES (:id, :pipeline, 'running', :dag_hash, '{}', :params, :source_path, :source_text,
        :reused, :resumed_from, :started_at, :host, :user_name, :pid, :lease_owner,
        :now + :lease_s, :owner_process, :log_dir);

-- name: dag_known
SELECT count(*) AS n FROM dags WHERE hash = :hash;

-- name: insert_dag
INSERT INTO dags (hash, tasks) VALUES (:hash, :tasks) ON CONFLICT (hash) DO NOTHING;

-- name: get_dags
SELECT hash, tasks FROM dags WHERE hash IN (SELECT value FROM json_each(:hashes));

-- name: claim_run
-- Hand an unfinished run over to the run resuming it: only one claimant wins, and only once
-- the run's lease no longer holds: it lapsed, or its owner is the process gone_owner names,
-- which the claimant found gone (corral.store._owner: an identity names one process for
-- ever, so that check needs no lock). A run that never recorded its end is marked crashed.
UPDATE runs
   SET resumed_by = :new_id,
       status = CASE WHEN status = 'running' THEN 'crashed' ELSE status END,
       lease_until = NULL
 WHERE id = :old_id
   AND resumed_by IS NULL
   AND status <> 'succeeded'
   AND (lease_until IS NULL OR lease_until < :now OR owner_process = :gone_owner)
RETURNING id;

-- name: renew_lease
UPDATE runs SET lease_until = :now + :lease_s
 WHERE id = :id AND lease_owner = :owner AND finished_at IS NULL;

-- name: finish_run
UPDATE runs SET status = :status, finished_at = :finished_at, lease_until = NULL
 WHERE id = :id;

-- name: insert_batch
INSERT INTO batches (run_id, worker, transitions, durations, task_values)
VALUES (:run_id, :worker, :transitions, :durations, :task_values);

-- name: insert_event
INSERT INTO events (run_id, at, kind, task_id, data)
VALUES (:run_id, :at, :kind, :task_id, :data);

-- name: get_run
SELECT *, lease_until > :now AS lease_live FROM runs WHERE id = :id;

-- name: run_batches
SELECT seq, worker, transitions, task_values FROM batches WHERE run_id = :id ORDER BY seq;

-- name: run_events
SELECT * FROM events WHERE run_id = :id ORDER BY seq;

-- name: latest_unfinished
SELECT *, lease_until > :now AS lease_live FROM runs
 WHERE pipeline = :pipeline
   AND resumed_by IS NULL
   AND status IN ('running', 'failed', 'interrupted', 'crashed')
 ORDER BY started_at DESC, id DESC
 LIMIT 1;

-- name: list_runs
-- By observed status: a 'running' run whose lease no longer holds died, and is listed as
-- crashed. A lease also stops holding when its owner is gone, which only Python can tell
-- (corral.store._owner): for 'running' and 'crashed' the manager filters what this returns.
SELECT *, lease_until > :now AS lease_live FROM runs
 WHERE (:status IS NULL
        OR (:status = 'running' AND status = 'running' AND lease_until > :now)
        OR (:status = 'crashed' AND status IN ('crashed', 'running'))
        OR (:status NOT IN ('running', 'crashed') AND status = :status))
   AND (:pipeline IS NULL OR pipeline = :pipeline)
 ORDER BY started_at DESC, id DESC
 LIMIT :limit;

-- name: recent_durations
-- The durations of the attempts that succeeded in the pipeline's latest runs (for estimates).
SELECT b.run_id, b.durations FROM batches AS b
 WHERE b.durations IS NOT NULL
   AND b.run_id IN (SELECT id FROM runs WHERE pipeline = :pipeline
                     ORDER BY started_at DESC LIMIT :runs)
 ORDER BY b.seq DESC;

-- name: prune_runs
DELETE FROM runs
 WHERE coalesce(finished_at, started_at) < :cutoff
   AND (lease_until IS NULL OR lease_until < :now)
RETURNING id;

-- name: prune_dags
DELETE FROM dags WHERE hash NOT IN (SELECT dag_hash FROM runs);
