-- Version 14: the charges of many jobs to their budgets in one call and one commit
-- (src/store/postgres/ledger.rs). Every dispatch of a budget's jobs takes the same rows;
-- charged one job per transaction, each held the rows through its round trips and its
-- commit's flush, and the dispatches of a busy budget queued behind each other (and held
-- the pool's connections while they waited). Added only: a replica of version 13 charges
-- as it did, in the same rows.
--
-- The charges come as one row per (job, budget, period), with the job's micro-dollars and
-- the period's limit, a job's rows together. Each job is charged in turn, all of its
-- periods or none: no row comes back for a job charged before (`r_budget` null); the
-- first period that would go past its limit, `r_admitted` false, when one would; else each
-- of its periods after its charge, `r_admitted` true. Every row the batch touches is made
-- when missing and locked first, in (budget, period) order, as every charge takes them, so
-- that two batches never wait for each other in a cycle. When the whole batch fits every
-- limit and no job of it was charged before (the common case), it is charged at once, each
-- job answered with its periods' figures after the batch; otherwise job by job.
CREATE FUNCTION offload_charge(p_jobs uuid[], p_micros bigint[], p_budgets text[], p_periods text[], p_limits bigint[])
RETURNS TABLE (r_job uuid, r_budget text, r_period text, r_spent bigint, r_committed bigint, r_admitted boolean)
LANGUAGE plpgsql AS $$
DECLARE
    j uuid;
    m bigint;
    over record;
BEGIN
    INSERT INTO budget_spend (budget, period)
        SELECT DISTINCT b, p FROM unnest(p_budgets, p_periods) AS t(b, p) ORDER BY b, p
        ON CONFLICT DO NOTHING;
    PERFORM 1 FROM budget_spend s
        WHERE (s.budget, s.period) IN (SELECT b, p FROM unnest(p_budgets, p_periods) AS t(b, p))
        ORDER BY s.budget, s.period FOR UPDATE;
    IF NOT EXISTS (SELECT 1 FROM budget_charges c WHERE c.job_id = ANY (p_jobs))
        AND NOT EXISTS (
            SELECT 1
            FROM (SELECT b, p, min(l) AS l, sum(mc) AS total
                  FROM unnest(p_micros, p_budgets, p_periods, p_limits) AS t(mc, b, p, l)
                  GROUP BY b, p) t
            JOIN budget_spend s ON s.budget = t.b AND s.period = t.p
            WHERE s.spent + s.committed + t.total > t.l)
    THEN
        UPDATE budget_spend s SET committed = s.committed + t.total
            FROM (SELECT b, p, sum(mc) AS total
                  FROM unnest(p_micros, p_budgets, p_periods) AS t(mc, b, p) GROUP BY b, p) t
            WHERE s.budget = t.b AND s.period = t.p;
        INSERT INTO budget_charges (job_id, budget, period, micros)
            SELECT job, b, p, mc FROM unnest(p_jobs, p_micros, p_budgets, p_periods) AS t(job, mc, b, p);
        RETURN QUERY
            SELECT t.job, s.budget, s.period, s.spent, s.committed, true
            FROM unnest(p_jobs, p_budgets, p_periods) AS t(job, b, p)
            JOIN budget_spend s ON s.budget = t.b AND s.period = t.p;
        RETURN;
    END IF;
    FOR j, m IN
        SELECT t.job, min(t.micros) FROM unnest(p_jobs, p_micros) WITH ORDINALITY AS t(job, micros, n)
        GROUP BY t.job ORDER BY min(t.n)
    LOOP
        IF EXISTS (SELECT 1 FROM budget_charges c WHERE c.job_id = j) THEN
            RETURN QUERY SELECT j, NULL::text, NULL::text, NULL::bigint, NULL::bigint, true;
            CONTINUE;
        END IF;
        SELECT s.budget, s.period, s.spent, s.committed INTO over
            FROM budget_spend s
            JOIN unnest(p_jobs, p_budgets, p_periods, p_limits) AS t(job, b, p, l)
                ON t.job = j AND s.budget = t.b AND s.period = t.p
            WHERE s.spent + s.committed + m > t.l
            ORDER BY s.budget, s.period LIMIT 1;
        IF FOUND THEN
            RETURN QUERY SELECT j, over.budget, over.period, over.spent, over.committed, false;
            CONTINUE;
        END IF;
        RETURN QUERY
            UPDATE budget_spend s SET committed = s.committed + m
            FROM unnest(p_jobs, p_budgets, p_periods) AS t(job, b, p)
            WHERE t.job = j AND s.budget = t.b AND s.period = t.p
            RETURNING j, s.budget, s.period, s.spent, s.committed, true;
        INSERT INTO budget_charges (job_id, budget, period, micros)
            SELECT j, t.b, t.p, m FROM unnest(p_jobs, p_budgets, p_periods) AS t(job, b, p)
            WHERE t.job = j;
    END LOOP;
END
$$;
