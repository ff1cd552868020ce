-- corral run store, SQLite, version 3: the v1 history tables go; version 2 moved their rows
-- into batches.

DROP TABLE transitions;
DROP TABLE task_values;
