-- corral fleet broker, PostgreSQL, version 4: load balancing. An attempt a balancing strategy
-- sends to one worker names it in jobs.target (NULL: any worker of its queue), and a worker's
-- heartbeat row carries its weight (corral worker --weight) for the weighted strategy.

ALTER TABLE jobs ADD COLUMN target text;
ALTER TABLE workers ADD COLUMN weight integer NOT NULL DEFAULT 1;
