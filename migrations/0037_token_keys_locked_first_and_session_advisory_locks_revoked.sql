-- A new token's keys are locked before it is audited; its keys exist and are of their use; the
-- serving role takes no session-level advisory lock (attack 27, F1, F6, F2/F3).
--
-- 1. 0036's statement trigger promised that a key being retired waits for an insert naming it.
--    It did not: its outer `WHERE k.state = 'retired'` was pushed below the LockRows of its
--    subquery, so only keys ALREADY retired were read FOR SHARE, and a live key's row was never
--    locked. (Its comment's "the foreign keys already take KEY SHARE locks" was false too:
--    vault.tokens has no foreign key, 0004 dropped them.) A serving-role INSERT under a
--    decrypt_only key, committed while `reencrypt`'s retirement was past its check and waiting for
--    the audit chain's lock, left a row under a retired key, and the job said `ok ... data keys
--    retired: [1]`. Now every key the new rows name (dek_id, fingerprint_key_id,
--    next_fingerprint_key_id) is locked FOR SHARE, in id order, by a statement of its own, and
--    only then checked. A retirement (an UPDATE of the key's row, FOR NO KEY UPDATE) waits for the
--    inserting transaction; the lifecycle trigger (vault.data_keys_lifecycle, as of 0030), which
--    runs once the row is locked and reads with a fresh snapshot, then sees the committed row and
--    refuses ("still seals stored values"). An insert that comes second waits for the retirement's commit and then sees the key
--    retired (the check is a later statement, with its own snapshot).
--
--    The trigger is renamed tokens_are_under_live_keys so that it fires BEFORE tokens_issued_audited
--    (statement triggers of one event fire in name order): that one appends the issue's audit row
--    and so takes the chain's lock, held to commit. Firing after it, an insert kept waiting on a
--    key row would wait holding the chain lock, and every audited call of every replica would
--    queue behind it. Its wait for the key rows is bounded by lock_timeout 2 s, set for that one
--    statement and put back (as 0035 does for the chain lock): with a key row held FOR UPDATE by
--    someone else (the serving role may: its column UPDATE grant on vault.data_keys suffices), a
--    new token fails in 2 s with lock_not_available, which the vault answers UNAVAILABLE
--    (adapters/postgres/errors.py), holding no chain lock meanwhile.
--
-- 2. A row whose dek_id names no data key, or a key that is not an encryption key, or whose
--    fingerprint_key_id (or next_fingerprint_key_id) names no key or one that is not a fingerprint
--    key, is refused (F6: one plain INSERT under dek_id 9999 stopped every `reindex`; such a row is
--    never the vault's: it writes only under the keys of its ring, read from vault.data_keys).
--    Keys are never deleted and their purpose never changes, so this needs no lock of its own.
--    Error: check_violation, constraint tokens_under_keys_of_their_use (not tokens_under_live_keys,
--    which the vault reads as "my key ring is stale", reloads and retries). Both refusals hold
--    for every role, the owner too, as in 0036.
--
-- 3. 0007 granted every pg_catalog advisory function to tokenvault_vault, the session-level forms
--    too. A session-level lock outlives its transactions: an `idle` serving-role session holding
--    the chain's key (F2) or KEYS_LOCK (F3) froze every audited call or every new token with no
--    bound, and the chain-lock watch, which looks at transactions, never ended it. The vault takes
--    only the transaction-level forms (the chain trigger, the key lock: vault_service/adapters/
--    postgres); the migrator's pg_advisory_lock runs as the owner, a superuser or a member of
--    tokenvault_owner, which keeps every form. So the session-level forms (lock, try, shared,
--    unlock, unlock_all; bigint and int4,int4) are revoked from tokenvault_vault. PUBLIC has none
--    since 0007. Still open: the transaction-level forms (a transaction holding a lock idle, or
--    thousands of locks filling the lock table: attack 27 F9), docs/threat-model.md.
--
-- Cost: one lock statement and two set_config calls more per INSERT statement (not per row):
-- docs/scaling.md, "Migration 0037".
--
-- CREATE/DROP TRIGGER take a SHARE ROW EXCLUSIVE lock on vault.tokens (no scan), waited for at
-- most 1 s as in 0034/0036: when it runs out the migration fails with LockNotAvailable, changes
-- nothing, and is simply run again.
SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION vault.tokens_under_live_keys() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    deks integer[];
    fps integer[];
    waited text;
    misnamed text;
    retired text;
BEGIN
    SELECT array_agg(DISTINCT a.dek_id),
           array_agg(DISTINCT a.fingerprint_key_id) || array_remove(array_agg(DISTINCT a.next_fingerprint_key_id), NULL)
    INTO deks, fps FROM added a;
    IF deks IS NULL THEN
        RETURN NULL;  -- no row went in (ON CONFLICT DO NOTHING met only rows already stored)
    END IF;
    -- Locked first, alone, whatever their state: a filter in this statement would decide which rows get locked.
    waited := current_setting('lock_timeout');
    PERFORM set_config('lock_timeout', '2s', true);
    PERFORM 1 FROM vault.data_keys k WHERE k.id = ANY(deks || fps) ORDER BY k.id FOR SHARE;
    PERFORM set_config('lock_timeout', waited, true);

    SELECT string_agg(format('%s key %s: %s', n.wanted, n.id, coalesce('a key of purpose ' || k.purpose, 'no such key')),
                      ', ' ORDER BY n.id, n.wanted) FILTER (WHERE k.purpose IS DISTINCT FROM n.wanted),
           string_agg(format('%s key %s', k.purpose, k.id), ', ' ORDER BY k.id) FILTER (WHERE k.state = 'retired')
    INTO misnamed, retired
    FROM (SELECT unnest(deks) AS id, 'encryption' AS wanted
          UNION SELECT unnest(fps), 'fingerprint') AS n
    LEFT JOIN vault.data_keys k ON k.id = n.id;
    IF misnamed IS NOT NULL THEN
        RAISE EXCEPTION 'vault.tokens: a row names a data key that does not exist or is not of its use (%)', misnamed
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tokens_under_keys_of_their_use',
                  DETAIL = 'dek_id names an encryption key, fingerprint_key_id and next_fingerprint_key_id a fingerprint key',
                  HINT = 'the vault writes only under the keys of vault.data_keys: anything writing such a row is'
                         ' not the vault (docs/threat-model.md, serving role)';
    END IF;
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
    DROP TRIGGER IF EXISTS tokens_are_under_live_keys ON vault.tokens;
    -- Named to sort before tokens_issued_audited: it must fire first (see 1. above).
    CREATE TRIGGER tokens_are_under_live_keys AFTER INSERT ON vault.tokens
        REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION vault.tokens_under_live_keys();
    PERFORM set_config('lock_timeout', previous_lock_timeout, true);
END
$$;

RESET ROLE;

-- The session-level advisory functions (both signatures of each), revoked from the serving role; the
-- transaction-level ones (pg_advisory_xact_lock, _shared, pg_try_advisory_xact_lock, _shared) stay.
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pg_catalog'
          AND p.proname IN ('pg_advisory_lock', 'pg_advisory_lock_shared', 'pg_try_advisory_lock',
                            'pg_try_advisory_lock_shared', 'pg_advisory_unlock', 'pg_advisory_unlock_shared',
                            'pg_advisory_unlock_all')
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM tokenvault_vault, PUBLIC', fn);
        IF has_function_privilege('tokenvault_vault', fn, 'EXECUTE') THEN
            RAISE WARNING 'tokenvault_vault may still execute %: run this migration as a superuser (or revoke it so)', fn;
        END IF;
    END LOOP;
END
$$;
