-- The database keeps its own rules (threat model: the service's own role and the ETL's role).
--
-- 1. The audit chain is computed by the database. A trigger takes the chain lock, gives the
--    row the next id and the database's own clock, refuses a row whose given time is not that
--    clock's (5 s tolerance) or earlier than the row before, and computes prev_hash/row_hash
--    (hash_version 2, encoding below). Whoever inserts, the chain cannot be backdated or forked;
--    only the schema owner (who can disable triggers) can rewrite it, and the signed
--    checkpoints (vault.audit_checkpoints, exported outside Postgres) catch that.
-- 2. The serving role can no longer UPDATE vault.tokens. Erasure, re-sealing and
--    re-fingerprinting go through SECURITY DEFINER functions that write their own audit row in
--    the same transaction.
-- 3. The ETL's role may insert rows but read no column that holds a token (tokenize + read
--    together would be a dictionary oracle for every ip and device id).
SET ROLE tokenvault_owner;

ALTER TABLE vault.audit_log
    ADD COLUMN IF NOT EXISTS hash_version       smallint NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS client_serial      text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS client_cert_sha256 text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS revealed           bytea[];   -- keyed hashes of the tokens revealed (who saw what)
ALTER TABLE vault.audit_log ALTER COLUMN at DROP NOT NULL;          -- the trigger sets them; NOT NULL is
ALTER TABLE vault.audit_log ALTER COLUMN prev_hash DROP NOT NULL;   -- checked after BEFORE triggers, so
ALTER TABLE vault.audit_log ALTER COLUMN row_hash DROP NOT NULL;    -- they are re-added below as CHECKs
ALTER TABLE vault.audit_log DROP CONSTRAINT IF EXISTS audit_log_chained;
ALTER TABLE vault.audit_log ADD CONSTRAINT audit_log_chained
    CHECK (at IS NOT NULL AND prev_hash IS NOT NULL AND row_hash IS NOT NULL);

-- One field of the v2 encoding: its UTF-8 length (4 bytes, big-endian), then its UTF-8 bytes.
CREATE OR REPLACE FUNCTION vault.audit_field(t text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT int4send(octet_length(convert_to(t, 'UTF8'))) || convert_to(t, 'UTF8')
$$;

-- The v2 row hash: SHA-256(prev_hash || fields), mirrored by vault_service/domain/audit.py.
CREATE OR REPLACE FUNCTION vault.audit_row_hash(
    prev_hash bytea, id bigint, at timestamptz, client text, client_serial text, client_cert_sha256 text,
    action text, purpose text, token_types text, item_count integer, outcome text, revealed bytea[]
) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(
        prev_hash
        || vault.audit_field(id::text)
        || vault.audit_field(to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'))
        || vault.audit_field(client)
        || vault.audit_field(client_serial)
        || vault.audit_field(client_cert_sha256)
        || vault.audit_field(action)
        || vault.audit_field(purpose)
        || vault.audit_field(token_types)
        || vault.audit_field(item_count::text)
        || vault.audit_field(outcome)
        || sha256(coalesce(array_send(revealed), ''::bytea))  -- C-speed, whatever the array's length
    )
$$;

CREATE OR REPLACE FUNCTION vault.audit_log_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    last_at   timestamptz;
    last_hash bytea;
    clock     timestamptz;
BEGIN
    -- Held to commit: appends are serialized, so ids, times and links all follow one order.
    PERFORM pg_advisory_xact_lock(1635083380);  -- 0x61756474, 'audt'
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
    NEW.id := nextval(pg_get_serial_sequence('vault.audit_log', 'id'));
    NEW.at := clock;
    NEW.hash_version := 2;
    NEW.prev_hash := coalesce(last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
    NEW.row_hash := vault.audit_row_hash(
        NEW.prev_hash, NEW.id, NEW.at, NEW.client, NEW.client_serial, NEW.client_cert_sha256, NEW.action,
        NEW.purpose, NEW.token_types, NEW.item_count, NEW.outcome, NEW.revealed);
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS audit_log_chain ON vault.audit_log;
CREATE TRIGGER audit_log_chain BEFORE INSERT ON vault.audit_log
    FOR EACH ROW EXECUTE FUNCTION vault.audit_log_chain();

-- Signed checkpoints of the chain: (head id, head hash, row count, time) signed with a Transit
-- key the service may use to sign only. Each is also exported outside Postgres.
CREATE TABLE IF NOT EXISTS vault.audit_checkpoints (
    id         bigserial PRIMARY KEY,
    head_id    bigint NOT NULL,
    head_hash  bytea NOT NULL,
    row_count  bigint NOT NULL,
    at         timestamptz NOT NULL,
    key_name   text NOT NULL,
    signature  text NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS audit_checkpoints_head ON vault.audit_checkpoints (head_id);
DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON vault.audit_checkpoints;
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON vault.audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION vault.audit_log_append_only();

-- A data key of purpose 'audit' keys the hashes of revealed tokens (who saw what).
ALTER TABLE vault.data_keys DROP CONSTRAINT IF EXISTS data_keys_purpose_check;
ALTER TABLE vault.data_keys ADD CONSTRAINT data_keys_purpose_check
    CHECK (purpose IN ('encryption', 'fingerprint', 'audit'));

-- Who saw this token: reveals are found by keyed hash.
-- A large pending list keeps the insert cheap (entries are appended, autovacuum merges them
-- into the index in the background); measured 4.8 -> 3.7 ms per audit row of 1000 reveals.
CREATE INDEX IF NOT EXISTS audit_log_revealed ON vault.audit_log USING gin (revealed)
    WITH (fastupdate = on, gin_pending_list_limit = 65536) WHERE revealed IS NOT NULL;

-- Paths that change a stored value, each writing its audit row in the same transaction.
CREATE OR REPLACE FUNCTION vault.erase_tokens(
    p_tokens text[], p_item_count integer, p_client text, p_client_serial text, p_client_cert_sha256 text,
    p_purpose text, p_token_types text
) RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    erased text[];
BEGIN
    WITH done AS (
        UPDATE vault.tokens SET sealed = NULL, fingerprint = NULL, next_fingerprint = NULL, erased_at = now()
        WHERE token = ANY(p_tokens) AND sealed IS NOT NULL RETURNING token
    ) SELECT coalesce(array_agg(token), '{}') INTO erased FROM done;
    INSERT INTO vault.audit_log (client, client_serial, client_cert_sha256, action, purpose, token_types,
                                 item_count, outcome)
    VALUES (p_client, p_client_serial, p_client_cert_sha256, 'erase', p_purpose, p_token_types, p_item_count,
            format('ok: %s erased, %s not erased', cardinality(erased), p_item_count - cardinality(erased)));
    RETURN QUERY SELECT unnest(erased);
END
$$;

-- Re-encryption: only rows still sealed under the key they were read with change (an erased or
-- already moved row is left alone, so a value can never come back).
CREATE OR REPLACE FUNCTION vault.reseal_tokens(
    p_tokens text[], p_old_dek_ids integer[], p_new_dek_ids integer[], p_sealed bytea[], p_actor text
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed integer;
BEGIN
    UPDATE vault.tokens t SET dek_id = u.new_dek, sealed = u.sealed
    FROM unnest(p_tokens, p_old_dek_ids, p_new_dek_ids, p_sealed) AS u(token, old_dek, new_dek, sealed)
    WHERE t.token = u.token AND t.dek_id = u.old_dek AND t.sealed IS NOT NULL;
    GET DIAGNOSTICS changed = ROW_COUNT;
    INSERT INTO vault.audit_log (client, action, item_count, outcome)
    VALUES (p_actor, 'reseal', coalesce(array_length(p_tokens, 1), 0), format('ok: %s re-sealed', changed));
    RETURN changed;
END
$$;

-- Re-index: the fingerprint under the pending key, for live rows that have none yet.
CREATE OR REPLACE FUNCTION vault.set_next_fingerprints(p_tokens text[], p_fingerprints bytea[], p_actor text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed integer;
BEGIN
    UPDATE vault.tokens t SET next_fingerprint = u.fp
    FROM unnest(p_tokens, p_fingerprints) AS u(token, fp)
    WHERE t.token = u.token AND t.fingerprint IS NOT NULL AND t.next_fingerprint IS NULL;
    GET DIAGNOSTICS changed = ROW_COUNT;
    INSERT INTO vault.audit_log (client, action, item_count, outcome)
    VALUES (p_actor, 'reindex', coalesce(array_length(p_tokens, 1), 0), format('ok: %s fingerprinted', changed));
    RETURN changed;
END
$$;

-- After a fingerprint key is promoted: move next_fingerprint into fingerprint, up to p_limit rows.
CREATE OR REPLACE FUNCTION vault.compact_fingerprints(p_active_key integer, p_limit integer, p_actor text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed integer;
BEGIN
    UPDATE vault.tokens SET fingerprint = next_fingerprint, fingerprint_key_id = p_active_key,
                            next_fingerprint = NULL
    WHERE token IN (
        SELECT token FROM vault.tokens
        WHERE fingerprint IS NOT NULL AND next_fingerprint IS NOT NULL AND fingerprint_key_id <> p_active_key
          AND EXISTS (SELECT 1 FROM vault.data_keys k WHERE k.id = p_active_key AND k.state = 'active'
                      AND k.purpose = 'fingerprint')
        LIMIT p_limit FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed > 0 THEN
        INSERT INTO vault.audit_log (client, action, item_count, outcome)
        VALUES (p_actor, 'compact', changed, format('ok: %s fingerprints moved to key %s', changed, p_active_key));
    END IF;
    RETURN changed;
END
$$;

RESET ROLE;

REVOKE ALL ON FUNCTION vault.erase_tokens(text[], integer, text, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION vault.reseal_tokens(text[], integer[], integer[], bytea[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION vault.set_next_fingerprints(text[], bytea[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION vault.compact_fingerprints(integer, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.erase_tokens(text[], integer, text, text, text, text, text) TO tokenvault_vault;
GRANT EXECUTE ON FUNCTION vault.reseal_tokens(text[], integer[], integer[], bytea[], text) TO tokenvault_vault;
GRANT EXECUTE ON FUNCTION vault.set_next_fingerprints(text[], bytea[], text) TO tokenvault_vault;
GRANT EXECUTE ON FUNCTION vault.compact_fingerprints(integer, integer, text) TO tokenvault_vault;

REVOKE UPDATE ON vault.tokens FROM tokenvault_vault;
REVOKE UPDATE (sealed, dek_id, fingerprint, fingerprint_key_id, next_fingerprint, erased_at)
    ON vault.tokens FROM tokenvault_vault;
GRANT SELECT, INSERT ON vault.audit_checkpoints TO tokenvault_vault;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA vault TO tokenvault_vault;

-- The ETL: insert, and read only what idempotence needs (no token column).
REVOKE SELECT ON public.user_logins FROM tokenvault_etl;
GRANT SELECT (event_id, sqs_message_id) ON public.user_logins TO tokenvault_etl;
