-- Each audit row names the row before it by hash, and no two rows may name the same one.
--
-- With this index the chain cannot fork, whoever writes: an append that links to a row
-- another writer has already linked to fails with a unique violation, and the writer re-reads
-- the chain's tail and tries again. So appends need no lock and travel in one statement.
SET ROLE tokenvault_owner;

CREATE UNIQUE INDEX IF NOT EXISTS audit_log_prev_hash ON vault.audit_log (prev_hash);

RESET ROLE;
