-- An append waits at most 2 s for the audit chain's lock (attack 26, F2).
--
-- The chain trigger serializes every append with pg_advisory_xact_lock(1635083380), held to the
-- appending transaction's commit. A session of the serving role (its password is all it takes:
-- DESIGN §1b) that inserts one audit row and leaves its transaction open holds that lock for as
-- long as it likes, and the role's sessions have no lock, statement or idle timeout: every reveal,
-- every token issued, every refusal row and every key job then waited for ever (a one-token
-- Detokenize still waiting after 90 s).
--
-- The wait for the lock now runs under lock_timeout = 2 s (it applies to advisory locks: measured,
-- tests/integration/test_audit_chain_lock_held.py), set for the lock alone and put back at once,
-- so the rest of the caller's transaction keeps its own setting. An append kept waiting fails with
-- lock_not_available (55P03: "canceling statement due to lock timeout"; no exception block, which
-- would be a subtransaction per append); the vault answers UNAVAILABLE naming the lock, and its
-- audit upkeep ends a session of its role that holds the lock for 5 s in one transaction
-- (adapters/postgres/chain_lock.py). The vault's own transactions hold the lock for milliseconds
-- (an append and its commit, one batch of a key job): a queue of appends 2 s long is an outage anyway.
-- A session setting its own lock_timeout changes nothing here (set_config inside the trigger).
-- The lock is tried first (pg_try_advisory_xact_lock): free, it is taken with no setting changed,
-- so an uncontended append costs what it did; only a wait pays for the two set_config calls.
--
-- The body is 0025's otherwise; the SET clause is 0018's. Owner, grants (none: a trigger function)
-- and the trigger are unchanged.
SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION vault.audit_log_chain() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    last_at   timestamptz;
    last_hash bytea;
    clock     timestamptz;
    waited    text;
BEGIN
    -- Held to commit: appends are serialized, so ids, times and links all follow one order.
    -- Waited for 2 s at most: a session holding it open makes appends fail, never hang. Free (the
    -- common case), it is taken at once and no setting changes.
    IF NOT pg_try_advisory_xact_lock(1635083380) THEN  -- 0x61756474, 'audt'
        waited := pg_catalog.current_setting('lock_timeout');
        PERFORM pg_catalog.set_config('lock_timeout', '2s', true);
        PERFORM pg_advisory_xact_lock(1635083380);
        PERFORM pg_catalog.set_config('lock_timeout', waited, true);
    END IF;
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

RESET ROLE;
