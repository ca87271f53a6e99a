-- An audit row is durable before the call it records is answered, whatever the session's
-- settings (insider round 15, finding 3, 4 Dec).
--
-- Any role may set defaults for its own sessions: the serving role ran
-- `ALTER ROLE CURRENT_USER SET synchronous_commit = off`, and every new vault session then
-- acknowledged its audit appends before their WAL reached disk. A reveal was served on a row
-- that a crash right after lost (3 of 3 times); the chain stayed consistent without it.
--
-- The vault now pins synchronous_commit = on in its startup options (session_settings.py). Here
-- the database enforces it too: the chain trigger, which every audit append goes through (the
-- service's appends, the audited functions' own rows, the issue and data-key rows of triggers),
-- sets synchronous_commit = on for the rest of the transaction (set_config's is_local: reverted
-- at its end, not at the function's, since the function's SET clause is for search_path only),
-- so the commit that makes the row visible waits for its WAL to be flushed (and for a
-- synchronous standby, if any: `local` and `remote_write` are raised too; `remote_apply`, the
-- strongest, is kept). A session that sets it off again after its own append, in the same
-- transaction, can still commit that one asynchronously: the vault's code never does.
--
-- The body is 0008's; the SET clause is 0018's (CREATE OR REPLACE replaces a function's SET
-- clauses with its own). Owner, grants (none: a trigger function) and the trigger are unchanged.
SET ROLE tokenvault_owner;

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
    PERFORM pg_advisory_xact_lock(1635083380);  -- 0x61756474, 'audt'
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
