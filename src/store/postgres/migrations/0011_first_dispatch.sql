-- Version 11: when each job's first attempt was dispatched, which its timeout counts from
-- whatever attempts follow (a lost workload, a failover, a preemption). Added only: a
-- replica of version 10 neither reads nor writes it.

ALTER TABLE jobs ADD COLUMN first_dispatched_at timestamptz;
