-- Costs that grew with the vault (issue 18).
--
-- 1. The key maintainer asks every 15 s when a value was last erased. Without an index that
--    was a full scan of vault.tokens (about a second of a core at 10M tokens, and the buffer
--    cache churned with it). Erasures are rare: this partial index is empty most of the time,
--    costs an insert nothing (the predicate fails), and answers max(erased_at) from one page.
--    Building it reads the table once under a SHARE lock, which holds back new tokens for
--    that long (a few seconds at 10M tokens): run this migration at a quiet moment on a large
--    vault, or create the index CONCURRENTLY by hand first (IF NOT EXISTS then skips it).
SET ROLE tokenvault_owner;
CREATE INDEX IF NOT EXISTS tokens_erased_at ON vault.tokens (erased_at) WHERE erased_at IS NOT NULL;
RESET ROLE;

-- 2. The serving role runs index probes of a few thousand rows at most. A parallel plan only
--    appears when the planner misjudges a growing table (no statistics yet) and then scans
--    it whole with workers; without workers it keeps to index plans.
ALTER ROLE tokenvault_vault SET max_parallel_workers_per_gather = 0;
