-- Version 8: one change notice per statement (per 200 jobs) instead of one per row.
--
-- The trigger of version 1 sent a notice for every row written. The submits' and the
-- engine's writes are batches of hundreds of rows a statement, and each notice cost a
-- trigger call, an entry in the notice queue and a message to every listening replica. A
-- notice's payload now names up to 200 jobs, their ids separated by spaces (a payload holds
-- less than 8,000 bytes; 200 ids take 7,399). Still sent in the writing transaction, so at
-- its commit, and never for a write that rolled back; a statement that changed no row
-- sends none.
DROP TRIGGER jobs_changed ON jobs;
DROP FUNCTION offload_job_changed();

CREATE FUNCTION offload_jobs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('offload_jobs', string_agg(id::text, ' '))
    FROM (SELECT id, (row_number() OVER () - 1) / 200 AS part FROM changed) AS numbered
    GROUP BY part;
    RETURN NULL;
END
$$;
-- A trigger with a transition table fires for one kind of event.
CREATE TRIGGER jobs_inserted AFTER INSERT ON jobs REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION offload_jobs_changed();
CREATE TRIGGER jobs_updated AFTER UPDATE ON jobs REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION offload_jobs_changed();
