-- The serving role takes advisory locks only through the vault's own functions, each on the vault's own
-- keys and a bounded number of them (attack 27, F9).
--
-- 0037 took the session-level advisory functions from the serving role; the transaction-level forms
-- (pg_advisory_xact_lock, _shared, pg_try_advisory_xact_lock, _shared, each with a bigint key and an
-- int4 pair) stayed, for the vault's three locks: the audit chain's (the chain trigger), the
-- key-generation lock (a new token's insert shared, a key operation exclusively) and a key job's hold
-- (key_job_liveness.py). With them, one transaction of anyone with the role's password taking ~12,800
-- locks on keys of its own (`SELECT pg_advisory_xact_lock(k) FROM generate_series(1, 20000) k`)
-- filled the server's shared lock table: every other session's next lock - any table's, anyone's,
-- the owner's - failed "out of shared memory" until that transaction ended, and the upkeep's watch,
-- which looks only at the vault's own keys, did not end it.
--
-- Now:
-- * vault.lock_audit_chain(): the audit chain's lock (0x61756474), as 0035's trigger took it (tried
--   first; else waited for 2 s, the caller's lock_timeout put back). The chain trigger calls it; the
--   trigger's body is 0035's otherwise, and still runs as the appending role (its reads of the log,
--   its settings for the transaction unchanged).
-- * vault.lock_key_generation_shared() / vault.lock_key_generation(): the key-generation lock
--   (0x6B657973), shared as a new token's insert takes it (tried first; else waited for 2 s with the
--   caller's lock_timeout put back, as tokens.py did in SQL), exclusively as a key operation takes it
--   (under the caller's lock_timeout: keys.py sets 2 s). No key argument: no other lock.
-- * vault.hold_key_job(key) / vault.try_claim_key_job(key): a key job's lock, the int4 pair
--   (1953196655, key), shared (waited for under the caller's lock_timeout) or tried exclusively.
--   A transaction may hold at most 4 of that class through them (the vault holds one per
--   transaction): a 5th is refused (program_limit_exceeded), so the class cannot fill the table.
-- * Every pg_catalog advisory function is revoked from tokenvault_vault (and PUBLIC, which has had
--   none since 0007 where a superuser migrated); EXECUTE on the five functions is the role's alone.
--   A migrator that may not revoke them (not a superuser: a managed PostgreSQL's owner) gets a
--   WARNING naming each, as with 0037.
-- What the role keeps: the chain's lock (appending, or vault.lock_audit_chain() alone), the
-- key-generation lock (one key), and up to 4 key-job locks per transaction: a bounded number of locks
-- per session, and the role's sessions are bounded by its logins' connection limits.
SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION vault.lock_audit_chain() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    waited text;
BEGIN
    IF NOT pg_try_advisory_xact_lock(1635083380) THEN  -- 0x61756474, 'audt'
        waited := pg_catalog.current_setting('lock_timeout');
        PERFORM pg_catalog.set_config('lock_timeout', '2s', true);
        PERFORM pg_advisory_xact_lock(1635083380);
        PERFORM pg_catalog.set_config('lock_timeout', waited, true);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION vault.audit_log_chain() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    last_at   timestamptz;
    last_hash bytea;
    clock     timestamptz;
BEGIN
    -- Held to commit: appends are serialized, so ids, times and links all follow one order.
    -- Waited for 2 s at most: a session holding it open makes appends fail, never hang. Free (the
    -- common case), it is taken at once and no setting changes.
    PERFORM vault.lock_audit_chain();
    -- The commit of this row waits for its WAL: never acknowledged before it is durable.
    IF pg_catalog.current_setting('synchronous_commit') <> 'remote_apply' THEN
        PERFORM pg_catalog.set_config('synchronous_commit', 'on', true);
    END IF;
    clock := clock_timestamp();
    IF NEW.at IS NOT NULL AND abs(extract(epoch FROM NEW.at - clock)) > 5 THEN
        RAISE EXCEPTION 'audit row time % is not the database clock (%)', NEW.at, clock
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT a.at, a.row_hash INTO last_at, last_hash FROM vault.audit_log a ORDER BY a.id DESC LIMIT 1;
    IF last_at IS NOT NULL AND clock < last_at THEN
        RAISE EXCEPTION 'audit row time % is earlier than the row before (%)', clock, last_at
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.id := nextval('vault.audit_log_id_seq'::regclass);
    NEW.at := clock;
    NEW.hash_version := 2;
    NEW.prev_hash := coalesce(last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
    NEW.row_hash := vault.audit_row_hash(
        NEW.prev_hash, NEW.id, NEW.at, NEW.client, NEW.client_serial, NEW.client_cert_sha256, NEW.action,
        NEW.purpose, NEW.token_types, NEW.item_count, NEW.outcome, NEW.revealed);
    RETURN NEW;
END
$$;


CREATE OR REPLACE FUNCTION vault.lock_key_generation_shared() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    waited text;
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(1801812339) THEN  -- 0x6B657973, 'keys'
        waited := pg_catalog.current_setting('lock_timeout');
        PERFORM pg_catalog.set_config('lock_timeout', '2s', true);
        PERFORM pg_advisory_xact_lock_shared(1801812339);
        PERFORM pg_catalog.set_config('lock_timeout', waited, true);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION vault.lock_key_generation() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1801812339);  -- under the caller's lock_timeout (keys.py: 2 s)
END
$$;

CREATE OR REPLACE FUNCTION vault.key_job_locks_held() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) FROM pg_catalog.pg_locks l
    WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'advisory' AND l.granted
      AND l.classid = 1953196655 AND l.objsubid = 2  -- 0x746b6a6f, 'tkjo': the int4-pair form
$$;

CREATE OR REPLACE FUNCTION vault.hold_key_job(key integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF vault.key_job_locks_held() >= 4 THEN
        RAISE EXCEPTION 'a transaction may hold at most 4 key-job locks' USING ERRCODE = 'program_limit_exceeded';
    END IF;
    PERFORM pg_advisory_xact_lock_shared(1953196655, key);  -- under the caller's lock_timeout
END
$$;

CREATE OR REPLACE FUNCTION vault.try_claim_key_job(key integer) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF vault.key_job_locks_held() >= 4 THEN
        RAISE EXCEPTION 'a transaction may hold at most 4 key-job locks' USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN pg_try_advisory_xact_lock(1953196655, key);
END
$$;

REVOKE ALL ON FUNCTION vault.lock_audit_chain(), vault.lock_key_generation_shared(), vault.lock_key_generation(), vault.key_job_locks_held(),
    vault.hold_key_job(integer), vault.try_claim_key_job(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.lock_key_generation_shared(), vault.lock_key_generation(),
    vault.hold_key_job(integer), vault.try_claim_key_job(integer) TO tokenvault_vault;
GRANT EXECUTE ON FUNCTION vault.lock_audit_chain() TO tokenvault_vault;  -- every appending role: the trigger's call

RESET ROLE;

-- Every advisory function of pg_catalog, from the serving role (the owner keeps 0007's grant: the functions
-- above and the chain trigger run as it, and the migrator's own lock is session-level).
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pg_catalog' AND p.proname LIKE 'pg%advisory%'
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM tokenvault_vault, PUBLIC', fn);
        IF has_function_privilege('tokenvault_vault', fn, 'EXECUTE') THEN
            RAISE WARNING 'tokenvault_vault may still execute %: run this migration as a superuser (or revoke it so)', fn;
        END IF;
    END LOOP;
END
$$;
