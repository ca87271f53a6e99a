-- Review 47, R47-9: the checkpoints committing to the erase rows (A46-3), indexed. Every replica's key-check round,
-- each start and the upkeep's walk look up the newest of them (`committed_checkpoints`, adapters/postgres/
-- audit_chain.py); with only `audit_checkpoints_head` that is a scan of every v1 checkpoint (one per upkeep round
-- for as long as the deployment ran: 5 million rows took ~0.5 s, a parallel scan on every round of every replica)
-- until v2 ones exist in number - the first walk of a long log, and whenever the chain stops holding. This partial
-- index holds only those rows (none at deploy time): the look-up is one index probe (~1 ms).
--
-- Building it reads vault.audit_checkpoints once under a SHARE lock, which holds back the upkeep's checkpoint inserts
-- for that long (seconds on tens of millions of rows; the upkeep signs and exports its head meanwhile and stores the
-- next): run it at a quiet moment, or create the index CONCURRENTLY by hand first (IF NOT EXISTS then skips it). The
-- owner can drop it: the look-up is then a scan again (slower, never wrong).
SET ROLE tokenvault_owner;

CREATE INDEX IF NOT EXISTS audit_checkpoints_committed ON vault.audit_checkpoints (head_id)
    WHERE erase_count IS NOT NULL OR erase_digest IS NOT NULL;

RESET ROLE;
