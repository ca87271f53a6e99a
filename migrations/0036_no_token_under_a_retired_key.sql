-- No row of vault.tokens goes in under a retired data key (review 29, F2).
--
-- The serving role has INSERT on vault.tokens (DESIGN §1b: its password is all an insider needs).
-- One row whose dek_id named a RETIRED encryption key stopped every `reencrypt` for good: the
-- retired key is not loaded, so opening the row raised KeysUnavailable, not a seal that does not
-- open, and the job (reading that key's rows first) moved nothing; the old key stayed decrypt_only
-- for ever. Such a row is never legitimate: a key is retired only once no row is under it
-- (vault.data_keys_lifecycle), and a value sealed under it could never be read again. The same
-- holds for a fingerprint under a retired fingerprint key (lookups would never find it: a second
-- token for its value).
--
-- Refused for every role, the owner too: nothing writes such a row. The vault's own inserts check
-- the live key generation under KEYS_LOCK first; a replica with a stale key ring that gets this
-- refusal is told StaleKeys (adapters/postgres/tokens.py), reloads its keys and retries, as on a
-- generation check. Error: check_violation with constraint name tokens_under_live_keys.
--
-- One query per INSERT statement (a statement trigger with a transition table, not one per row):
-- the keys the new rows name are read FOR SHARE, so a key being retired (its UPDATE to 'retired'
-- checks for rows under it) waits for the insert's commit and then sees its row, and an insert
-- waiting on a key being retired then sees it retired: no insert slips in between the check and
-- the retirement. The foreign keys already take KEY SHARE locks on those rows per row inserted.
-- Measured: docs/scaling.md, "Migration 0036".
--
-- Rows already under a retired key (planted before this migration) stay: `reencrypt` now sets them
-- aside and says so (vault_service/service/rotation.py); docs/key-rotation.md says how to remove them.
--
-- CREATE TRIGGER takes a SHARE ROW EXCLUSIVE lock on vault.tokens (no table scan); lock_timeout
-- 1 s as in 0034: when it runs out the migration fails with LockNotAvailable, changes nothing, and
-- is simply run again.
SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION vault.tokens_under_live_keys() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    retired text;
BEGIN
    SELECT string_agg(format('%s key %s', k.purpose, k.id), ', ' ORDER BY k.id) INTO retired
    FROM (SELECT k.id, k.purpose, k.state FROM vault.data_keys k
          WHERE k.id IN (SELECT a.dek_id FROM added a UNION SELECT a.fingerprint_key_id FROM added a)
          ORDER BY k.id FOR SHARE) AS k
    WHERE k.state = 'retired';
    IF retired IS NOT NULL THEN
        RAISE EXCEPTION 'vault.tokens: no row goes in under a retired data key (%)', retired
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tokens_under_live_keys',
                  DETAIL = 'a value sealed or fingerprinted under a retired key could never be read or found again',
                  HINT = 'a vault replica with a stale key ring reloads its keys and retries; anything else writing'
                         ' such a row is not the vault (docs/threat-model.md, serving role)';
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION vault.tokens_under_live_keys() FROM PUBLIC;

DO $$
DECLARE
    previous_lock_timeout text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('lock_timeout', '1s', true);
    DROP TRIGGER IF EXISTS tokens_under_live_keys ON vault.tokens;
    CREATE TRIGGER tokens_under_live_keys AFTER INSERT ON vault.tokens
        REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION vault.tokens_under_live_keys();
    PERFORM set_config('lock_timeout', previous_lock_timeout, true);
END
$$;

RESET ROLE;
