-- Version 10: the places each replica holds at each provider, written at each renewal of
-- its lease, so that the others keep a provider's `max_concurrency` for the whole cluster:
-- each takes no more than its share, nor more than what the others leave. Added only: a
-- replica of version 9 neither reads nor writes it.

ALTER TABLE replicas ADD COLUMN held jsonb NOT NULL DEFAULT '{}';
