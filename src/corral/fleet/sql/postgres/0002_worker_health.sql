-- What a worker's health is judged on (corral.fleet._health): of the attempts it finished,
-- how many failed, and the seconds they ran in all.
ALTER TABLE workers
    ADD COLUMN failed bigint NOT NULL DEFAULT 0,
    ADD COLUMN busy_s double precision NOT NULL DEFAULT 0;
