-- Version 6: an index for lists filtered by state (GET /v1/jobs?state=), which would
-- otherwise walk every newer job of the tenant to find a page.

CREATE INDEX jobs_by_state ON jobs (tenant, state, id DESC);
