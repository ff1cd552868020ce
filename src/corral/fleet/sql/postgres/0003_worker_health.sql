-- corral fleet broker, PostgreSQL, version 3: what a worker's health is judged on
-- (corral.fleet._health): of the attempts it finished, how many failed, and the seconds they
-- ran in all. Rows of workers registered before this version start at 0.

ALTER TABLE workers
    ADD COLUMN failed bigint NOT NULL DEFAULT 0,
    ADD COLUMN busy_s double precision NOT NULL DEFAULT 0;
