-- Version 4: several replicas on one database. Each job has an owner, the replica whose
-- engine reconciles it (NULL: none, so the next replica to look adopts it); the engine's
-- writes apply only while the owner is the writing replica. Each replica has a lease,
-- renewed by the database's clock; once it lapses the others adopt that replica's jobs.

ALTER TABLE jobs ADD COLUMN owner text;

-- A replica's own unfinished jobs (start, the queued sweep), and the jobs to adopt.
CREATE INDEX jobs_by_owner ON jobs (owner) WHERE NOT released;

CREATE TABLE replicas (
    id text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz NOT NULL
);
