-- Version 3: the run times of a DAG task's successful runs, newest first, for the expected
-- duration of a job whose spec gives none (routing's cost estimate).

CREATE INDEX jobs_task_runs ON jobs
    (tenant, (labels->>'dag_id'), (labels->>'task_id'), finished_at DESC)
    WHERE state = 'succeeded';
