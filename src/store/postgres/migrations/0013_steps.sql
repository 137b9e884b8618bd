-- Version 13: how each step of a job of several steps went (a GA4GH TES task's executors
-- and the filer around them), written when the job ends. Added only: a replica of version
-- 12 neither reads nor writes it.

ALTER TABLE jobs ADD COLUMN steps jsonb;
