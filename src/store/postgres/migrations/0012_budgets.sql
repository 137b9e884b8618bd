-- Version 12: budgets, what each has spent and committed per period, and the charges of
-- jobs not yet settled (see src/store/ledger.rs). Added only: a replica of version 11
-- neither reads nor writes these tables.

CREATE TABLE budgets (
    id text PRIMARY KEY,
    budget json NOT NULL,
    source text NOT NULL CHECK (source IN ('config', 'api'))
);

CREATE TABLE budget_spend (
    budget text NOT NULL,
    period text NOT NULL,
    -- Micro-dollars.
    spent bigint NOT NULL DEFAULT 0,
    committed bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, period)
);

CREATE TABLE budget_charges (
    job_id uuid NOT NULL,
    budget text NOT NULL,
    period text NOT NULL,
    micros bigint NOT NULL,
    PRIMARY KEY (job_id, budget, period)
);
