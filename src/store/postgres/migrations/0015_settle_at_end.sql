-- Version 15: a job's charges are settled by the statement that ends it (a trigger, in
-- that statement's transaction): its cost is spent in each period it was charged to, its
-- estimate no longer committed, its charges gone. Before, each budgets round looked for
-- ended jobs among every live charge (src/store/postgres/ledger.rs's SETTLE_SQL), a scan
-- of them all each second; that round now runs seldom, for charges nothing ended (a job
-- charged in the instant after it ended, or one deleted unsettled).
--
-- One trigger a statement, over the rows it changed: the engine's updates come in batches,
-- and the periods of all of a batch's ended jobs are locked at once, in (budget, period)
-- order as a charge takes them (offload_charge), so that two batches, or a batch and a
-- charge, never wait for each other in a cycle. A job whose charges are gone already (an
-- ended job written again) finds none. The function keeps the schema it was made in, so
-- that a statement from a session with another `search_path` finds the tables. Added only: a replica of version 14 settles in its
-- rounds as before and finds nothing left to settle.
CREATE FUNCTION offload_settle_ended() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM 1 FROM budget_spend s
        WHERE (s.budget, s.period) IN (
            SELECT c.budget, c.period FROM budget_charges c JOIN settled_jobs n ON n.id = c.job_id
            WHERE n.state IN ('succeeded', 'failed', 'cancelled'))
        ORDER BY s.budget, s.period FOR UPDATE;
    WITH gone AS (
        DELETE FROM budget_charges c USING settled_jobs n
        WHERE c.job_id = n.id AND n.state IN ('succeeded', 'failed', 'cancelled')
        RETURNING c.budget, c.period, c.micros,
            COALESCE(round((n.cost->>'usd')::numeric * 1000000)::bigint, 0) AS cost
    ), sums AS (
        SELECT budget, period, sum(cost)::bigint AS cost, sum(micros)::bigint AS micros
        FROM gone GROUP BY budget, period
    )
    UPDATE budget_spend s SET spent = s.spent + sums.cost, committed = s.committed - sums.micros
    FROM sums WHERE s.budget = sums.budget AND s.period = sums.period;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_settle_charges AFTER UPDATE ON jobs REFERENCING NEW TABLE AS settled_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION offload_settle_ended();
