-- The fleet's PostgreSQL broker: every statement it runs (corral/fleet/postgres.py). Each
-- atomic operation of the Broker protocol is one statement here (data-modifying CTEs), so one
-- transaction and one round trip. %(channel)s is the broker's LISTEN/NOTIFY channel of the
-- table concerned (its schema's); pg_notify fires when the statement commits.

-- name: epoch
SELECT epoch FROM meta;

-- name: enqueue
WITH queued AS (
    INSERT INTO jobs (queue, attempt, run_id, task_id, executor, reply, body, resources,
                      max_value, target)
    SELECT queue, attempt, run_id, task_id, executor, reply, body, resources::jsonb, max_value,
           target
      FROM unnest(%(queue)s::text[], %(attempt)s::text[], %(run_id)s::text[],
                  %(task_id)s::text[], %(executor)s::text[], %(reply)s::text[],
                  %(body)s::bytea[], %(resources)s::text[], %(max_value)s::bigint[],
                  %(target)s::text[])
           WITH ORDINALITY AS m(queue, attempt, run_id, task_id, executor, reply, body,
                                resources, max_value, target, n)
     ORDER BY n
        ON CONFLICT (attempt) DO NOTHING
    RETURNING queue)
SELECT pg_notify(%(channel)s, queue) FROM (SELECT DISTINCT queue FROM queued) AS q;

-- name: claim
-- SKIP LOCKED: workers claiming at once take different rows, none waits for another. Rows
-- sent to one worker (a balancing strategy's target) are that worker's only.
WITH picked AS (
    SELECT id FROM jobs
     WHERE queue = ANY(%(queues)s::text[]) AND worker IS NULL
       AND (target IS NULL OR target = %(worker)s)
     ORDER BY id
     LIMIT %(count)s
       FOR UPDATE SKIP LOCKED)
UPDATE jobs SET worker = %(worker)s, deliveries = jobs.deliveries + 1, renewed_at = now()
  FROM picked
 WHERE jobs.id = picked.id
RETURNING jobs.id, jobs.queue, jobs.attempt, jobs.run_id, jobs.task_id, jobs.executor,
          jobs.reply, jobs.body, jobs.resources, jobs.max_value, jobs.deliveries, jobs.target;

-- name: reclaim
-- Rows whose holder has not renewed them for the heartbeat timeout (it died, or handed them
-- back): the server's clock on both sides.
WITH picked AS (
    SELECT id FROM jobs
     WHERE worker IS NOT NULL AND queue = ANY(%(queues)s::text[])
       AND renewed_at < now() - make_interval(secs => %(timeout)s)
     ORDER BY id
     LIMIT %(count)s
       FOR UPDATE SKIP LOCKED)
UPDATE jobs SET worker = %(worker)s, deliveries = jobs.deliveries + 1, renewed_at = now()
  FROM picked
 WHERE jobs.id = picked.id
RETURNING jobs.id, jobs.queue, jobs.attempt, jobs.run_id, jobs.task_id, jobs.executor,
          jobs.reply, jobs.body, jobs.resources, jobs.max_value, jobs.deliveries, jobs.target;

-- name: free_targets
-- Rows sent to a worker that is gone (no heartbeat for the timeout, by the server's clock;
-- stopping; or deregistered) and not claimed yet: free for any worker of their queue, whose
-- workers are woken.
WITH freed AS (
    UPDATE jobs SET target = NULL
     WHERE worker IS NULL AND target IS NOT NULL AND queue = ANY(%(queues)s::text[])
       AND NOT EXISTS (
           SELECT 1 FROM workers w
            WHERE w.id = jobs.target AND w.state = 'running'
              AND w.beat_at >= now() - make_interval(secs => %(timeout)s))
    RETURNING queue)
SELECT pg_notify(%(channel)s, queue) FROM (SELECT DISTINCT queue FROM freed) AS q;

-- name: renew
-- Only rows this worker still holds, and not those it handed back.
UPDATE jobs SET renewed_at = now()
 WHERE id = ANY(%(ids)s::bigint[]) AND worker = %(worker)s AND renewed_at > '-infinity'
RETURNING id;

-- name: hand_back
UPDATE jobs SET renewed_at = '-infinity'
 WHERE id = ANY(%(ids)s::bigint[]) AND worker = %(worker)s;

-- name: states
SELECT attempt, done FROM marks WHERE attempt = ANY(%(attempts)s::text[]);

-- name: cancel
INSERT INTO marks (attempt, done)
SELECT unnest(%(attempts)s::text[]), false
    ON CONFLICT (attempt) DO NOTHING;

-- name: post
WITH posted AS (
    INSERT INTO events (reply, kind, attempt, worker, data, started)
    SELECT reply, kind, attempt, worker, data, started
      FROM unnest(%(reply)s::text[], %(kind)s::text[], %(attempt)s::text[],
                  %(worker)s::text[], %(data)s::bytea[], %(started)s::float8[])
           WITH ORDINALITY AS e(reply, kind, attempt, worker, data, started, n)
     ORDER BY n
    RETURNING reply)
SELECT pg_notify(%(channel)s, reply) FROM (SELECT DISTINCT reply FROM posted) AS r;

-- name: finish
-- The events (an attempt's last output, then the ENDs), the done marks and the rows' deletion:
-- one statement, so all or nothing. A row another worker holds now (this one was written off)
-- is deleted too: the other learns it lost it at its next renewal.
WITH posted AS (
    INSERT INTO events (reply, kind, attempt, worker, data, started)
    SELECT reply, kind, attempt, worker, data, started
      FROM unnest(%(reply)s::text[], %(kind)s::text[], %(attempt)s::text[],
                  %(worker)s::text[], %(data)s::bytea[], %(started)s::float8[])
           WITH ORDINALITY AS e(reply, kind, attempt, worker, data, started, n)
     ORDER BY n
    RETURNING reply),
marked AS (
    INSERT INTO marks (attempt, done)
    SELECT unnest(%(done)s::text[]), true
        ON CONFLICT (attempt) DO UPDATE SET done = true, at = now()),
acked AS (
    DELETE FROM jobs WHERE id = ANY(%(ids)s::bigint[]))
SELECT pg_notify(%(channel)s, reply) FROM (SELECT DISTINCT reply FROM posted) AS r;

-- name: skip
DELETE FROM jobs WHERE id = ANY(%(ids)s::bigint[]);

-- name: dead_letter
WITH letter AS (
    INSERT INTO dead_letters (attempt, run_id, task_id, queue, executor, reply, body,
                              resources, max_value, reason, history, deliveries)
    VALUES (%(attempt)s, %(run_id)s, %(task_id)s, %(queue)s, %(executor)s, %(reply)s,
            %(body)s, %(resources)s::jsonb, %(max_value)s, %(reason)s, %(history)s::jsonb,
            %(deliveries)s)),
posted AS (
    INSERT INTO events (reply, kind, attempt, worker, data, started)
    VALUES (%(reply)s, %(kind)s, %(attempt)s, %(worker)s, %(data)s, %(started)s)),
marked AS (
    INSERT INTO marks (attempt, done) VALUES (%(attempt)s, true)
        ON CONFLICT (attempt) DO UPDATE SET done = true, at = now()),
acked AS (
    DELETE FROM jobs WHERE id = %(id)s)
SELECT pg_notify(%(channel)s, %(reply)s);

-- name: read_events
SELECT seq, kind, attempt, worker, data, started FROM events
 WHERE reply = %(reply)s AND NOT (seq = ANY(%(pending)s::bigint[]))
 ORDER BY seq
 LIMIT %(count)s;

-- name: forget_events
DELETE FROM events WHERE seq = ANY(%(seqs)s::bigint[]);

-- name: drop_reply
DELETE FROM events WHERE reply = %(reply)s;

-- name: acquire_lease
-- Taken when free, released, lapsed, or already ours; each taking is a newer fencing token.
INSERT INTO leases AS l (run_id, holder, until, fence)
VALUES (%(run_id)s, %(holder)s, now() + make_interval(secs => %(ttl)s), 1)
    ON CONFLICT (run_id) DO UPDATE
   SET holder = excluded.holder, until = excluded.until, fence = l.fence + 1
 WHERE l.holder IS NULL OR l.holder = excluded.holder OR l.until < now()
RETURNING fence;

-- name: lease_holder
SELECT holder FROM leases WHERE run_id = %(run_id)s;

-- name: renew_lease
UPDATE leases SET until = now() + make_interval(secs => %(ttl)s)
 WHERE run_id = %(run_id)s AND holder = %(holder)s AND until >= now()
RETURNING fence;

-- name: release_lease
UPDATE leases SET holder = NULL WHERE run_id = %(run_id)s AND holder = %(holder)s;

-- name: tidy
-- What Redis would have expired: marks and unread events after a day, leases after a week.
WITH marks_gone AS (DELETE FROM marks WHERE at < now() - interval '1 day'),
     events_gone AS (DELETE FROM events WHERE at < now() - interval '1 day')
DELETE FROM leases WHERE until < now() - interval '7 days';

-- name: register
INSERT INTO workers (id, host, pid, queues, concurrency, resources, running, done, started_at,
                     last_beat, state, failed, busy_s, weight, window_s, recent_done,
                     recent_failed, recent_busy_s, pool, beat_at)
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s, %(concurrency)s, %(resources)s::jsonb,
        %(running)s, %(done)s, %(started_at)s, %(last_beat)s, %(state)s, %(failed)s,
        %(busy_s)s, %(weight)s, %(window_s)s, %(recent_done)s, %(recent_failed)s,
        %(recent_busy_s)s, %(pool)s, now())
    ON CONFLICT (id) DO UPDATE
   SET host = excluded.host, pid = excluded.pid, queues = excluded.queues,
       concurrency = excluded.concurrency, resources = excluded.resources,
       running = excluded.running, done = excluded.done, started_at = excluded.started_at,
       last_beat = excluded.last_beat, state = excluded.state, failed = excluded.failed,
       busy_s = excluded.busy_s, weight = excluded.weight, window_s = excluded.window_s,
       recent_done = excluded.recent_done, recent_failed = excluded.recent_failed,
       recent_busy_s = excluded.recent_busy_s, pool = excluded.pool, beat_at = now();

-- name: deregister
DELETE FROM workers WHERE id = %(id)s;

-- name: workers
-- A worker silent for an hour is forgotten (listed as gone until then).
WITH forgotten AS (DELETE FROM workers WHERE beat_at < now() - interval '1 hour')
SELECT id, host, pid, queues, concurrency, resources, running, done, started_at, last_beat,
       state, failed, busy_s, weight, window_s, recent_done, recent_failed, recent_busy_s, pool
  FROM workers
 WHERE beat_at >= now() - interval '1 hour'
 ORDER BY last_beat, id;

-- name: queue_depth
-- Attempts on these queues that no worker holds: a pool's demand.
SELECT count(*) AS n FROM jobs WHERE queue = ANY(%(queues)s::text[]) AND worker IS NULL;

-- name: saturation
-- The share of the server's connections that clients hold (its own processes aside).
SELECT count(*)::float8 / current_setting('max_connections')::float8 AS used
  FROM pg_stat_activity WHERE backend_type = 'client backend';

-- name: dead_letters
SELECT id, attempt, run_id, task_id, queue, reason, history,
       extract(epoch FROM at)::float8 AS at
  FROM dead_letters ORDER BY id LIMIT %(count)s;

-- name: dead_letter_entry
SELECT id, attempt, run_id, task_id, queue, reason, history,
       extract(epoch FROM at)::float8 AS at, executor, reply, body, resources, max_value
  FROM dead_letters WHERE id = %(id)s;

-- name: retry_dead_letter
-- Queued again as a new row (its delivery count starts over), no longer marked done.
WITH letter AS (
    DELETE FROM dead_letters WHERE id = %(id)s
    RETURNING attempt, run_id, task_id, queue, executor, reply, body, resources, max_value),
unmarked AS (
    DELETE FROM marks WHERE attempt IN (SELECT attempt FROM letter)),
queued AS (
    INSERT INTO jobs (queue, attempt, run_id, task_id, executor, reply, body, resources,
                      max_value)
    SELECT queue, attempt, run_id, task_id, executor, reply, body, resources, max_value
      FROM letter
        ON CONFLICT (attempt) DO NOTHING)
SELECT attempt, run_id, task_id, queue, executor, reply, body, resources, max_value,
       pg_notify(%(channel)s, queue)
  FROM letter;

-- name: purge_dead_letters
DELETE FROM dead_letters WHERE %(all)s OR id = ANY(%(ids)s::bigint[]);
