-- A re-seal can no longer destroy a value for good (fourth insider round, 3 Dec, LOW-2).
--
-- vault.reseal_tokens (0007, 0011) checked only that each new sealed value was at least 28 bytes
-- long. The serving role called it with 64 bytes of garbage and the old key's id as both the old
-- and the new key: the value answered DATA_LOSS from then on, audited as "reseal ok", with no
-- erase row, erase budget or erasure count involved.
--
-- The database cannot open a sealed value (it holds no key), so it checks what it can and keeps
-- what it replaces:
-- 1. A re-seal only moves a value from a decrypt_only encryption key to the active one - the
--    one thing the re-encryption job does - so the new key differs from the old, and a value
--    already under the active key cannot be re-sealed at all. AES-GCM keeps the length, so the
--    new sealed value is exactly as long as the one it replaces (nonce + ciphertext + tag).
-- 2. The replaced sealed value and its key id go to vault.resealed_values, written only by this
--    function: the serving role has no privilege on that table, so it cannot read, change or
--    delete what it keeps. Garbage of the right length that passes (1) - after the serving role
--    itself rotated the data key, which the key trigger audits - is detected (DATA_LOSS at the
--    next reveal) and recoverable: the owner puts the kept value back (and the old key back to
--    decrypt_only if it was retired meanwhile; its wrapped key stays in vault.data_keys):
--        UPDATE vault.tokens t SET sealed = h.sealed, dek_id = h.dek_id
--        FROM (SELECT DISTINCT ON (token) * FROM vault.resealed_values ORDER BY token, id DESC) h
--        WHERE t.token = h.token AND t.sealed IS NOT NULL AND t.token = '<the token>';
--    Likewise a wrapped data key the serving role replaces (it may, for the KEK rewrap) is kept
--    in vault.replaced_wrapped_keys by a trigger: overwriting it with garbage lost every value
--    under that key for good.
-- 3. Erasure still leaves nothing: erasing a value deletes its kept copies in the same
--    transaction (a trigger on the erasing UPDATE), so GDPR erasure is not undone by (2).
-- A re-encryption of N values keeps N old sealed values (~70 bytes each); the owner may delete
-- rows of a key retired long ago (DELETE ... WHERE dek_id = ...), the serving role never.
SET ROLE tokenvault_owner;

CREATE TABLE IF NOT EXISTS vault.resealed_values (
    id          bigserial PRIMARY KEY,
    token       text NOT NULL,
    dek_id      integer NOT NULL,
    sealed      bytea NOT NULL,
    replaced_at timestamptz NOT NULL DEFAULT now(),
    replaced_by text NOT NULL
);
CREATE INDEX IF NOT EXISTS resealed_values_token ON vault.resealed_values (token);

CREATE TABLE IF NOT EXISTS vault.replaced_wrapped_keys (
    id          bigserial PRIMARY KEY,
    key_id      integer NOT NULL,
    wrapped_key text NOT NULL,
    replaced_at timestamptz NOT NULL DEFAULT now(),
    replaced_by text NOT NULL
);

CREATE OR REPLACE FUNCTION vault.reseal_tokens(
    p_tokens text[], p_old_dek_ids integer[], p_new_dek_ids integer[], p_sealed bytea[], p_actor text
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed integer;
    active_key integer;
BEGIN
    -- 12-byte nonce and 16-byte tag at least: anything shorter is not a sealed value.
    IF EXISTS (SELECT 1 FROM unnest(p_sealed) AS s WHERE s IS NULL OR length(s) < 28) THEN
        RAISE EXCEPTION 'reseal_tokens: not a sealed value' USING ERRCODE = 'check_violation';
    END IF;
    SELECT k.id INTO active_key FROM vault.data_keys k WHERE k.purpose = 'encryption' AND k.state = 'active';
    IF EXISTS (SELECT 1 FROM unnest(p_new_dek_ids) AS n(id) WHERE n.id IS DISTINCT FROM active_key) THEN
        RAISE EXCEPTION 'reseal_tokens: a value is re-sealed only under the active data key (%)', active_key
            USING ERRCODE = 'check_violation',
                  HINT = 'the data key was rotated while the re-encryption job ran: run reencrypt again';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_old_dek_ids) AS o(id) WHERE NOT EXISTS (
                   SELECT 1 FROM vault.data_keys k
                   WHERE k.id = o.id AND k.purpose = 'encryption' AND k.state = 'decrypt_only')) THEN
        RAISE EXCEPTION 'reseal_tokens: only a value under a decrypt_only data key is re-sealed'
            USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_tokens, p_old_dek_ids, p_sealed) AS u(token, old_dek, sealed)
               CROSS JOIN LATERAL (SELECT x.sealed, x.dek_id FROM vault.tokens x WHERE x.token = u.token LIMIT 1) AS t
               WHERE t.dek_id = u.old_dek AND length(t.sealed) <> length(u.sealed)) THEN
        RAISE EXCEPTION 'reseal_tokens: a re-sealed value must be exactly as long as the value it replaces'
            USING ERRCODE = 'check_violation';
    END IF;
    -- The rows, locked; their sealed values are kept, then replaced (one statement: no table
    -- of the caller's, such as a temporary one, stands in between).
    WITH target AS (
        SELECT t.id, t.token, t.dek_id, t.sealed AS old, u.sealed AS new
        FROM unnest(p_tokens, p_old_dek_ids, p_sealed) AS u(token, old_dek, sealed)
        CROSS JOIN LATERAL (SELECT x.id FROM vault.tokens x WHERE x.token = u.token LIMIT 1) AS r
        JOIN vault.tokens t ON t.id = r.id
        WHERE t.dek_id = u.old_dek AND t.sealed IS NOT NULL AND length(t.sealed) = length(u.sealed)
        FOR UPDATE OF t
    ), kept AS (
        INSERT INTO vault.resealed_values (token, dek_id, sealed, replaced_by)
        SELECT token, dek_id, old, coalesce(p_actor, '') FROM target
    )
    UPDATE vault.tokens t SET dek_id = active_key, sealed = target.new FROM target WHERE t.id = target.id;
    GET DIAGNOSTICS changed = ROW_COUNT;
    INSERT INTO vault.audit_log (client, action, item_count, outcome)
    VALUES (p_actor, 'reseal', coalesce(array_length(p_tokens, 1), 0), format('ok: %s re-sealed', changed));
    RETURN changed;
END
$$;

-- An erased value keeps no copy: its kept sealed values go with it.
CREATE OR REPLACE FUNCTION vault.forget_resealed_values() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM vault.resealed_values WHERE token = OLD.token;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS tokens_erased_forget_resealed ON vault.tokens;
CREATE TRIGGER tokens_erased_forget_resealed AFTER UPDATE OF sealed ON vault.tokens
    FOR EACH ROW WHEN (OLD.sealed IS NOT NULL AND NEW.sealed IS NULL)
    EXECUTE FUNCTION vault.forget_resealed_values();

CREATE OR REPLACE FUNCTION vault.keep_replaced_wrapped_key() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO vault.replaced_wrapped_keys (key_id, wrapped_key, replaced_by)
    VALUES (OLD.id, OLD.wrapped_key, session_user::text);
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS data_keys_keep_replaced_wrapped_key ON vault.data_keys;
CREATE TRIGGER data_keys_keep_replaced_wrapped_key BEFORE UPDATE OF wrapped_key ON vault.data_keys
    FOR EACH ROW WHEN (OLD.wrapped_key IS DISTINCT FROM NEW.wrapped_key)
    EXECUTE FUNCTION vault.keep_replaced_wrapped_key();

RESET ROLE;

REVOKE ALL ON vault.resealed_values, vault.replaced_wrapped_keys FROM PUBLIC;
REVOKE ALL ON SEQUENCE vault.resealed_values_id_seq, vault.replaced_wrapped_keys_id_seq FROM PUBLIC;
REVOKE ALL ON FUNCTION vault.forget_resealed_values(), vault.keep_replaced_wrapped_key() FROM PUBLIC;
