-- What an insider test found open after 0006, closed in the database itself.
--
-- 1. A checkpoint must vouch for a real head: the row exists with that hash, the count is the
--    rows up to it, it is newer than the last checkpoint, and its time is the database's clock.
--    (A bogus checkpoint far ahead would otherwise stop the service from checkpointing at all.)
-- 2. Issuing tokens and changing data keys leave an audit row in the same transaction: the
--    serving role could otherwise re-point a value (plant a row under an erased value's
--    fingerprint) or retire/replace keys without a trace.
-- 3. Re-sealing refuses what is not a sealed value (a way to destroy a value under "reseal ok").
-- 4. Advisory locks are the vault's: any other login could hold the audit chain lock and stall
--    every audited call. And the ETL's role gets a connection limit, so it cannot use up the
--    server's connection slots.
SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION vault.audit_checkpoint_matches() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    last_head  bigint;
    last_count bigint;
    counted    bigint;
BEGIN
    SELECT c.head_id, c.row_count INTO last_head, last_count
    FROM vault.audit_checkpoints c ORDER BY c.head_id DESC LIMIT 1;
    IF last_head IS NOT NULL AND NEW.head_id <= last_head THEN
        RAISE EXCEPTION 'checkpoint at row % is not newer than the last one (row %)', NEW.head_id, last_head
            USING ERRCODE = 'check_violation';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM vault.audit_log a WHERE a.id = NEW.head_id AND a.row_hash = NEW.head_hash) THEN
        RAISE EXCEPTION 'checkpoint names row % with a hash the audit log does not have', NEW.head_id
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT coalesce(last_count, 0) + count(*) INTO counted
    FROM vault.audit_log a WHERE a.id > coalesce(last_head, 0) AND a.id <= NEW.head_id;
    IF counted <> NEW.row_count THEN
        RAISE EXCEPTION 'checkpoint counts % rows up to row %, the audit log has %', NEW.row_count, NEW.head_id, counted
            USING ERRCODE = 'check_violation';
    END IF;
    IF abs(extract(epoch FROM NEW.at - clock_timestamp())) > 60 THEN
        RAISE EXCEPTION 'checkpoint time % is not the database clock', NEW.at USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS audit_checkpoint_matches ON vault.audit_checkpoints;
CREATE TRIGGER audit_checkpoint_matches BEFORE INSERT ON vault.audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION vault.audit_checkpoint_matches();

-- Who did it, for rows the database writes on its own: the login role and its application.
CREATE OR REPLACE FUNCTION vault.audit_session() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT session_user::text || coalesce(' (' || nullif(current_setting('application_name', true), '') || ')', '')
$$;

CREATE OR REPLACE FUNCTION vault.audit_tokens_issued() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    issued_count bigint;
BEGIN
    SELECT count(*) INTO issued_count FROM issued;
    IF issued_count > 0 THEN
        INSERT INTO vault.audit_log (client, action, item_count, outcome)
        VALUES (vault.audit_session(), 'issue', issued_count, format('ok: %s tokens issued', issued_count));
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS tokens_issued_audited ON vault.tokens;
CREATE TRIGGER tokens_issued_audited AFTER INSERT ON vault.tokens
    REFERENCING NEW TABLE AS issued FOR EACH STATEMENT EXECUTE FUNCTION vault.audit_tokens_issued();

CREATE OR REPLACE FUNCTION vault.audit_data_keys_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    summary text;
    changed_count bigint;
BEGIN
    SELECT count(*), string_agg(format('%s %s %s', k.id, k.purpose, k.state), ', ' ORDER BY k.id)
    INTO changed_count, summary FROM changed k;
    IF changed_count > 0 THEN
        INSERT INTO vault.audit_log (client, action, item_count, outcome)
        VALUES (vault.audit_session(), 'data-key-' || lower(TG_OP), changed_count, 'ok: ' || summary);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS data_keys_inserted_audited ON vault.data_keys;
CREATE TRIGGER data_keys_inserted_audited AFTER INSERT ON vault.data_keys
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION vault.audit_data_keys_changed();
DROP TRIGGER IF EXISTS data_keys_updated_audited ON vault.data_keys;
CREATE TRIGGER data_keys_updated_audited AFTER UPDATE ON vault.data_keys
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION vault.audit_data_keys_changed();

CREATE OR REPLACE FUNCTION vault.reseal_tokens(
    p_tokens text[], p_old_dek_ids integer[], p_new_dek_ids integer[], p_sealed bytea[], p_actor text
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed integer;
BEGIN
    -- 12-byte nonce and 16-byte tag at least: anything shorter is not a sealed value.
    IF EXISTS (SELECT 1 FROM unnest(p_sealed) AS s WHERE s IS NULL OR length(s) < 28) THEN
        RAISE EXCEPTION 'reseal_tokens: not a sealed value' USING ERRCODE = 'check_violation';
    END IF;
    UPDATE vault.tokens t SET dek_id = u.new_dek, sealed = u.sealed
    FROM unnest(p_tokens, p_old_dek_ids, p_new_dek_ids, p_sealed) AS u(token, old_dek, new_dek, sealed)
    WHERE t.token = u.token AND t.dek_id = u.old_dek AND t.sealed IS NOT NULL;
    GET DIAGNOSTICS changed = ROW_COUNT;
    INSERT INTO vault.audit_log (client, action, item_count, outcome)
    VALUES (p_actor, 'reseal', coalesce(array_length(p_tokens, 1), 0), format('ok: %s re-sealed', changed));
    RETURN changed;
END
$$;

RESET ROLE;

REVOKE ALL ON FUNCTION vault.audit_checkpoint_matches(), vault.audit_tokens_issued(),
    vault.audit_data_keys_changed() FROM PUBLIC;

-- Advisory locks: only the vault's roles (and superusers) may take them.
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pg_catalog' AND p.proname LIKE 'pg%advisory%'
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO tokenvault_vault, tokenvault_owner', fn);
    END LOOP;
END
$$;

ALTER ROLE tokenvault_etl CONNECTION LIMIT 40;
