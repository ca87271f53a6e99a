-- An erasure waits at most 2 s for the rows it erases (review 33, R33-3).
--
-- vault.erase_tokens (0034) UPDATEs the rows of the tokens it erases. A row another transaction has
-- changed or locked and not yet committed - a key job's batch (vault.reseal_tokens,
-- vault.set_next_fingerprints, vault.compact_fingerprints: up to 100,000 rows in one transaction),
-- another erasure of the same token, or any of these called by a session with the serving role's
-- password that leaves its transaction open - made the erasure wait with no bound: the role's sessions
-- have no lock_timeout. Every other wait of the vault gives up after 2 s (the audit chain's lock,
-- 0035; the key-generation lock and key rows, 0037 and keys.py; call budget rows, 0038; a new token's
-- insert behind another's uncommitted insert of the same value, tokens.py), and the audit upkeep's
-- lock watch (adapters/postgres/chain_lock.py) ends a session of the role that keeps a vault session
-- waiting 5 s on that premise: an erasure waiting out a long batch got the batch ended.
--
-- The function now runs with lock_timeout = 2 s (a SET clause, as 0038's: it applies to the function's
-- own statements and its triggers' and is put back on return, so the caller's setting is untouched).
-- An erasure kept waiting fails with lock_not_available (55P03) and the vault answers UNAVAILABLE naming
-- a row of vault.tokens another transaction holds, in about 2 s; nothing is erased and no audit row is
-- written (the function's transaction is rolled back). The batch is left to finish; the erasure is
-- retried. The chain trigger's own 2 s wait (0035) is unchanged.
SET ROLE tokenvault_owner;

ALTER FUNCTION vault.erase_tokens(text[], bytea[], integer, text, text, text, text, text)
    SET lock_timeout = '2s';

RESET ROLE;
