-- Audit rows that only the database writes are refused to everyone else (review 23, R23-2).
--
-- The serving role holds INSERT on vault.audit_log (0002) to append the service's own rows. It
-- could therefore also append rows of actions that only the database's triggers and functions
-- write, and which `audit verify` and who-saw trust: one forged `data-key-insert` row naming an
-- invented key id with the active audit key's check value made `audit verify` fail ("data keys 3
-- and 999 are one key") and who-saw refuse, for good (a chained row is never removed), and it hid
-- any later real key problem. Erase rows are trusted the same way (erase_reconciliation.py): a
-- forged one naming token hashes, or claiming erasures, failed verification for good too.
--
-- 1. A BEFORE INSERT trigger on vault.audit_log, fired before the chain trigger (triggers of one
--    event fire in name order: `audit_log_actions...` < `audit_log_chain`, so a refused row takes
--    neither the chain lock nor an id), refuses, unless the current user is the owner (or a
--    member of it: the migrator, superusers - who may do anything anyway):
--      data-key-*   written by vault.audit_data_keys_changed for every change of vault.data_keys
--      issue        written by vault.audit_tokens_issued for every insert into vault.tokens
--      reseal       written by vault.reseal_tokens
--      compact      written by vault.compact_fingerprints
--      erase        when it names tokens (`revealed`) or says it erased any (`ok: N erased`, N not
--                   0): written by vault.erase_tokens, in the erasure's transaction. The service
--                   itself writes erase rows that erased nothing (a refusal, `refused: ...`; a call
--                   with no erasable token, `ok: 0 erased`): those stay open to it.
--    Inside a SECURITY DEFINER function or trigger owned by tokenvault_owner the current user is
--    tokenvault_owner: that is "the database itself". The trigger function is NOT security
--    definer (it must see the caller's current user). pg_trigger_depth() would not do: a session
--    may fire its own trigger on a temporary table of its own.
-- 2. The two audit triggers that ran as the caller become SECURITY DEFINER (their search_path is
--    0018's, `pg_catalog, pg_temp`; the rows name the session through vault.audit_session(), which
--    reads session_user, unchanged in definer context).
-- 3. 'reindex' stays open: the service writes reindex rows itself (rotation.py: started,
--    unfinished, refused, ok) beside the database's; no verification trusts them.
-- 4. TEMPORARY on the database: revoked from PUBLIC and granted back to the roles that use it
--    (the ETL stages its loads in a temporary table; analysts may in their own sessions). The
--    serving role uses none: it can then create no object at all (no CREATE on any schema since
--    0018, USAGE only on vault). A database created later from a template gets PostgreSQL's
--    default (TEMPORARY for PUBLIC) again: (1) does not depend on this.
SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION vault.audit_log_actions_of_the_database() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    refused text;
BEGIN
    IF pg_has_role(current_user, 'tokenvault_owner', 'MEMBER') THEN
        RETURN NEW;
    END IF;
    IF NEW.action LIKE 'data-key-%' THEN
        refused := 'a data-key row is written by the database for each change of vault.data_keys'
                   ' (change keys through the key rotation commands, docs/key-rotation.md)';
    ELSIF NEW.action = 'issue' THEN
        refused := 'an issue row is written by the database for each insert into vault.tokens';
    ELSIF NEW.action = 'reseal' THEN
        refused := 'a reseal row is written by vault.reseal_tokens, with the re-sealing';
    ELSIF NEW.action = 'compact' THEN
        refused := 'a compact row is written by vault.compact_fingerprints, with the compaction';
    ELSIF NEW.action = 'erase'
          AND (coalesce(cardinality(NEW.revealed), 0) > 0
               OR (NEW.outcome LIKE 'ok: %' AND NEW.outcome <> 'ok: 0 erased')) THEN
        refused := 'an erase row that names tokens or erased any is written by vault.erase_tokens, with the'
                   ' erasure (the service may write only erase rows that erased nothing: refused, ok: 0 erased)';
    END IF;
    IF refused IS NULL THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'vault.audit_log: role % may not write an audit row of action "%": only the database itself'
                    ' writes it; nothing was written', current_user, NEW.action
        USING ERRCODE = 'insufficient_privilege', DETAIL = refused,
              HINT = 'the service writes these rows by calling the database''s functions, never with an INSERT';
END
$$;
DROP TRIGGER IF EXISTS audit_log_actions_of_the_database ON vault.audit_log;
CREATE TRIGGER audit_log_actions_of_the_database BEFORE INSERT ON vault.audit_log
    FOR EACH ROW EXECUTE FUNCTION vault.audit_log_actions_of_the_database();

ALTER FUNCTION vault.audit_data_keys_changed() SECURITY DEFINER;
ALTER FUNCTION vault.audit_tokens_issued() SECURITY DEFINER;

RESET ROLE;

REVOKE ALL ON FUNCTION vault.audit_log_actions_of_the_database() FROM PUBLIC;
REVOKE ALL ON FUNCTION vault.audit_data_keys_changed(), vault.audit_tokens_issued() FROM PUBLIC;

-- (4) Only the owner of the database (or a superuser) can revoke it; any other migrator is told.
DO $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC, tokenvault_vault', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO tokenvault_etl, tokenvault_analyst', current_database());
    IF has_database_privilege('tokenvault_vault', current_database(), 'TEMPORARY') THEN
        RAISE WARNING 'the serving role tokenvault_vault may still create temporary objects in database %',
            current_database()
            USING HINT = 'As the database''s owner: REVOKE TEMPORARY ON DATABASE ... FROM PUBLIC, tokenvault_vault;'
                ' GRANT TEMPORARY ON DATABASE ... TO tokenvault_etl, tokenvault_analyst. The audit rows the'
                ' database writes are refused to it either way.';
    END IF;
END
$$;
