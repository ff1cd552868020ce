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
                  reused, resumed_from, started_at, host, user_name, pid, lease_owner, lease_until)
VALUES (:id, :pipeline, 'running', :dag_hash, :snapshot, :params, :source_path, :source_text,
        :reused, :resumed_from, :started_at, :host, :user_name, :pid, :lease_owner,
        :now + :lease_s);

-- name: claim_run
-- Hand an unfinished run over to the run resuming it: only one claimant wins, and never while
-- the run's lease is live. A run that never recorded its end is marked crashed.
UPDATE runs
   SET resumed_by = :new_id,
       status = CASE WHEN status = 'running' THEN 'crashed' ELSE status END,
       lease_until = NULL
 WHERE id = :old_id
   AND resumed_by IS NULL
   AND status <> 'succeeded'
   AND (lease_until IS NULL OR lease_until < :now)
RETURNING id;

-- name: heartbeat
UPDATE runs SET lease_until = :now + :lease_s
 WHERE id = :id AND lease_owner = :owner AND finished_at IS NULL;

-- name: finish_run
UPDATE runs SET status = :status, finished_at = :finished_at, lease_until = NULL
 WHERE id = :id;

-- name: insert_transition
INSERT INTO transitions (run_id, task_id, state, attempt, at, clock, duration_s, error,
                         traceback, exit_code, executor, worker, log_path)
VALUES (:run_id, :task_id, :state, :attempt, :at, :clock, :duration_s, :error, :traceback,
        :exit_code, :executor, :worker, :log_path);

-- name: insert_value
INSERT INTO task_values (run_id, task_id, codec, size, data, path, error)
VALUES (:run_id, :task_id, :codec, :size, :data, :path, :error);

-- name: insert_event
INSERT INTO events (run_id, at, kind, task_id, data)
VALUES (:run_id, :at, :kind, :task_id, :data);

-- name: get_run
SELECT *, lease_until > :now AS lease_live FROM runs WHERE id = :id;

-- name: run_transitions
SELECT * FROM transitions WHERE run_id = :id ORDER BY seq;

-- name: run_values
SELECT * FROM task_values WHERE run_id = :id;

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
-- By observed status: a 'running' run whose lease lapsed died, and is listed as crashed.
SELECT *, lease_until > :now AS lease_live FROM runs
 WHERE (:status IS NULL
        OR (:status = 'running' AND status = 'running' AND lease_until > :now)
        OR (:status = 'crashed' AND (status = 'crashed' OR
                                     (status = 'running' AND coalesce(lease_until, 0) <= :now)))
        OR (:status NOT IN ('running', 'crashed') AND status = :status))
   AND (:pipeline IS NULL OR pipeline = :pipeline)
 ORDER BY started_at DESC, id DESC
 LIMIT :limit;

-- name: successful_durations
-- The durations of the latest per_task successful attempts of each task (reuses excluded).
SELECT task_id, duration_s FROM (
    SELECT t.task_id, t.duration_s,
           row_number() OVER (PARTITION BY t.task_id ORDER BY t.seq DESC) AS k
      FROM transitions t JOIN runs r ON r.id = t.run_id
     WHERE r.pipeline = :pipeline
       AND t.state = 'succeeded'
       AND t.duration_s IS NOT NULL
       AND t.task_id IN (SELECT value FROM json_each(:task_ids))
) WHERE k <= :per_task;

-- name: prune_values
DELETE FROM task_values
 WHERE path IS NOT NULL
   AND run_id IN (SELECT id FROM runs
                   WHERE coalesce(finished_at, started_at) < :cutoff
                     AND (lease_until IS NULL OR lease_until < :now))
RETURNING path;

-- name: prune_runs
DELETE FROM runs
 WHERE coalesce(finished_at, started_at) < :cutoff
   AND (lease_until IS NULL OR lease_until < :now)
RETURNING id;
