-- Version 9: the index of a DAG task's successful runs keys on digests of the `dag_id` and
-- `task_id` labels, not on their values. A label value may have 1,024 characters of up to
-- four bytes each: a row of the old index could pass a B-tree's limit (2,704 bytes), and
-- then the update that ended a job `succeeded` failed, every time it was tried. Readers
-- compare the digests and then the values.

DROP INDEX IF EXISTS jobs_task_runs;
CREATE INDEX jobs_task_runs_by_digest ON jobs
    (tenant, md5(labels->>'dag_id'), md5(labels->>'task_id'), finished_at DESC)
    WHERE state = 'succeeded';
