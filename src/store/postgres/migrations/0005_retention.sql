-- Version 5: an index for retention (store.retention_days), over jobs ended and released.

CREATE INDEX jobs_retention ON jobs (finished_at) WHERE released;
