-- corral fleet broker, PostgreSQL, version 6: a worker's recent attempts and its pool. Its
-- health is judged on the attempts it finished in the last window_s seconds (corral.fleet._window;
-- 0: a worker of an older corral, judged on its lifetime figures), and a pool counts its share
-- of the queue by the capacity of its own workers (pool: the id of the pool that started it).

ALTER TABLE workers
    ADD COLUMN window_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN recent_done bigint NOT NULL DEFAULT 0,
    ADD COLUMN recent_failed bigint NOT NULL DEFAULT 0,
    ADD COLUMN recent_busy_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN pool text;
