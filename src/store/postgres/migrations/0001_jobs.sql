-- Version 1 of the PostgreSQL store: jobs, their events, and the change notices replicas
-- listen to. Applied once, under the migration lock, in one transaction with its row in
-- offload_migrations. Never edit a migration that has shipped: add the next one.

CREATE TABLE jobs (
    id uuid PRIMARY KEY,
    tenant text NOT NULL,
    state text NOT NULL CHECK (state IN
        ('queued', 'starting', 'running', 'cancelling', 'succeeded', 'failed', 'cancelled')),
    provider text,
    provider_ref text,
    attempts integer NOT NULL DEFAULT 0,
    launch_key text,
    dispatched_at timestamptz,
    exit_code integer,
    reason text,
    -- json, not jsonb: kept as written, byte for byte, and it may hold \u0000.
    result json,
    -- The spec with its secret values redacted, as the gateway wrote it.
    spec json NOT NULL,
    -- For label selectors only (labels @> '{"k": "v"}'); a job's labels are read from its
    -- spec. NUL characters, which jsonb cannot hold, are stored as U+FFFD here.
    labels jsonb NOT NULL,
    -- The spec's secret values sealed with the gateway's key for this job's id; '' when
    -- there are none or once the job's workload is released.
    secret_env text NOT NULL DEFAULT '',
    idempotency_key text,
    created_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    cancel_requested_by text,
    log_tail text,
    released boolean NOT NULL DEFAULT false,
    excluded text[] NOT NULL DEFAULT '{}'
);

-- A tenant's jobs, newest first (list, its cursor).
CREATE INDEX jobs_by_tenant ON jobs (tenant, id DESC);
-- One job per idempotency key and tenant: INSERT ... ON CONFLICT DO NOTHING relies on it.
CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- What the engine still has work for (unfinished, queued), small however many jobs ended.
CREATE INDEX jobs_unfinished ON jobs (state, id) WHERE NOT released;
-- Label selectors.
CREATE INDEX jobs_by_labels ON jobs USING gin (labels jsonb_path_ops);

CREATE TABLE events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at timestamptz NOT NULL,
    state text NOT NULL,
    reason text
);
CREATE INDEX events_by_job ON events (job_id, seq);

-- Every write to a job tells the listening replicas which job changed, in the writing
-- transaction (so at its commit, and never for a write that rolled back). A trigger, so
-- that no write path can forget it.
CREATE FUNCTION offload_job_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('offload_jobs', NEW.id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_changed AFTER INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION offload_job_changed();
