-- Version 7: cheaper engine writes, which a burst of dispatches is made of (two updates a
-- job, each with its event).
--
-- Room kept free in each page of jobs (pages written from now on), so that an update that
-- changes no indexed column (a launch's provider_ref, say) can put the row's new version
-- beside the old one without a new entry in each of the table's indexes (a HOT update).
ALTER TABLE jobs SET (fillfactor = 70);

-- The events' reference to their job was checked by a trigger at every event insert, a
-- query of its own. Every event is written by the statement that writes its job (which
-- holds the job's row lock), and a purge deletes a job's events with it (no more
-- ON DELETE CASCADE).
ALTER TABLE events DROP CONSTRAINT events_job_id_fkey;
