-- The audit rows of key operations, indexed: which intent row has no outcome (attack 26, F5).
--
-- A key operation (reencrypt, reindex, rewrap, rotate-*, retire-kek-versions) holds its intent row
-- (`started`) while it runs (adapters/postgres/key_job_liveness.py); `status` and the next key
-- operation look for intent rows with no outcome row after them and no live holder. They read only
-- these rows, a few per change ticket, through this partial index, not the whole log (millions of
-- reveal rows). The action list is the same as KEY_JOB_ACTIONS (service/ports.py); the query's
-- predicate repeats it so that the planner uses the index.
--
-- Building it reads vault.audit_log once under a SHARE lock, which holds back audit appends (so
-- every audited call) for that long (seconds on a log of millions of rows): run this migration at a
-- quiet moment on a large vault, or create the index CONCURRENTLY by hand first (IF NOT EXISTS then
-- skips it), as for 0010.
SET ROLE tokenvault_owner;
CREATE INDEX IF NOT EXISTS audit_log_key_job_rows ON vault.audit_log (action, client, id)
    WHERE action IN ('reencrypt', 'reindex', 'rewrap', 'rotate-encryption-key', 'rotate-fingerprint-key',
                     'retire-kek-versions');
RESET ROLE;
