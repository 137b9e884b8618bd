-- Version 2: each job's cost (estimate at dispatch, actual once ended), and an index for
-- cost reports over a tenant's jobs by the time they finished.

ALTER TABLE jobs ADD COLUMN cost jsonb;

CREATE INDEX jobs_finished ON jobs (tenant, finished_at);
