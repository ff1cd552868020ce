-- corral fleet broker, PostgreSQL, version 2: an event carries when its attempt started.
-- START and END events say when the worker launched the attempt (Event.at: epoch seconds, the
-- worker's clock), from which the coordinator measures the delay from admission to start.
-- NULL for other events, and for events posted by a corral before this version.

ALTER TABLE events ADD COLUMN started double precision;
