-- A data key's material never comes back under a new id (attack 24, F1).
--
-- Migration 0024's trigger let the serving role insert any key as `active` (demoting the active
-- DEK in the same transaction) without comparing it with the keys stored before. It re-inserted
-- a RETIRED DEK's wrapped key and check value as a new active DEK: the vault sealed new values
-- under it and rewrapped it under each new KEK version, so after the whole crypto-shredding
-- sequence (reencrypt, reindex, KEK rotate, rewrap, min_decryption raised, trim) the erased
-- value's residue in a backup opened through the resurrected key. Nothing noticed.
--
-- 1. vault.data_key_check_values: the check value of every data key ever stored, with its id,
--    written by a trigger on every insert and every change of a check value, whoever writes
--    (the owner too); no grant on it, so no role but the owner can read, change or delete it.
--    Filled here from vault.data_keys and from the check values the hash-chained data-key rows
--    of the audit log name (a key the owner deleted since 0024 is named there).
-- 2. The lifecycle trigger (0024's, restated whole) refuses a session that is not the owner's:
--      insert   without a check value (only keys made before 0024 had none: the service records
--               theirs once, with an UPDATE)
--      insert   whose check value is one ever stored (vault.data_key_check_values, vault.data_keys),
--               or whose wrapped key is one ever stored (vault.data_keys, and
--               vault.replaced_wrapped_keys, which keeps every wrapped key a rewrap replaced: 0020)
--      update   that records a check value, or a wrapped key, another key id holds or held.
--    A fresh key from Transit has a check value and wrapped key never seen; a retired key made
--    "new" again has its old ones (a re-wrap by the vault's AppRole changes the wrapped key, not
--    the check value; a forged check value is refused by the service, which checks each key it
--    loads against its row's).
-- 3. The service refuses to load two key ids holding one key, and `audit verify` fails when the
--    chain names one check value for two key ids (vault_service/service/keyring.py,
--    audit_keys_check.py): what the owner may still do is seen.
SET ROLE tokenvault_owner;

CREATE TABLE IF NOT EXISTS vault.data_key_check_values (
    key_id      integer NOT NULL,
    check_value bytea NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    recorded_by text NOT NULL DEFAULT session_user
);
CREATE INDEX IF NOT EXISTS data_key_check_values_check ON vault.data_key_check_values (check_value);

INSERT INTO vault.data_key_check_values (key_id, check_value)
SELECT k.id, k.check_value FROM vault.data_keys k
WHERE k.check_value IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM vault.data_key_check_values s WHERE s.key_id = k.id AND s.check_value = k.check_value);

-- The data-key rows name `<id> <purpose> <state> check <hex>` per key (0024's audit_data_keys_changed).
INSERT INTO vault.data_key_check_values (key_id, check_value)
SELECT DISTINCT m.named[1]::integer, decode(m.named[2], 'hex')
FROM vault.audit_log a
CROSS JOIN LATERAL regexp_matches(a.outcome, '(\d{1,9}) \w+ \w+ check ([0-9a-f]{2,128})', 'g') AS m(named)
WHERE a.action IN ('data-key-insert', 'data-key-update') AND length(m.named[2]) % 2 = 0
  AND NOT EXISTS (SELECT 1 FROM vault.data_key_check_values s
                  WHERE s.key_id = m.named[1]::integer AND s.check_value = decode(m.named[2], 'hex'));

CREATE OR REPLACE FUNCTION vault.record_data_key_check_value() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.check_value IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM vault.data_key_check_values s WHERE s.key_id = NEW.id AND s.check_value = NEW.check_value) THEN
        INSERT INTO vault.data_key_check_values (key_id, check_value) VALUES (NEW.id, NEW.check_value);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS data_keys_record_check_value ON vault.data_keys;
CREATE TRIGGER data_keys_record_check_value AFTER INSERT OR UPDATE OF check_value ON vault.data_keys
    FOR EACH ROW EXECUTE FUNCTION vault.record_data_key_check_value();

-- The id of a key other than `p_key_id` whose check value is or was `p_check`, or whose wrapped
-- key is or was `p_wrapped`; NULL when none.
CREATE OR REPLACE FUNCTION vault.data_key_material_seen(p_key_id integer, p_check bytea, p_wrapped text)
RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT min(seen.key_id) FROM (
        SELECT s.key_id FROM vault.data_key_check_values s WHERE s.check_value = p_check
        UNION ALL SELECT k.id FROM vault.data_keys k WHERE k.check_value = p_check OR k.wrapped_key = p_wrapped
        UNION ALL SELECT r.key_id FROM vault.replaced_wrapped_keys r WHERE r.wrapped_key = p_wrapped
    ) AS seen
    WHERE seen.key_id IS DISTINCT FROM p_key_id
$$;

CREATE OR REPLACE FUNCTION vault.data_keys_lifecycle() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pending_id integer;
    seen_id integer;
    refused text;
BEGIN
    IF pg_has_role(session_user, 'tokenvault_owner', 'MEMBER') THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' THEN
        seen_id := vault.data_key_material_seen(NEW.id, NEW.check_value, NEW.wrapped_key);
    ELSIF TG_OP = 'UPDATE' AND (NEW.wrapped_key IS DISTINCT FROM OLD.wrapped_key
                                OR NEW.check_value IS DISTINCT FROM OLD.check_value) THEN
        seen_id := vault.data_key_material_seen(OLD.id, NEW.check_value, NEW.wrapped_key);
    END IF;
    IF TG_OP = 'DELETE' THEN
        refused := format('data key %s is never deleted', OLD.id);
    ELSIF TG_OP = 'INSERT' THEN
        IF NOT (NEW.state = 'active' OR (NEW.state = 'pending' AND NEW.purpose = 'fingerprint')) THEN
            refused := format('a new %s key starts active (a fingerprint key may start pending), not %s',
                              NEW.purpose, NEW.state);
        ELSIF NEW.check_value IS NULL THEN
            refused := 'a new data key carries its check value (only keys made before migration 0024 had none)';
        ELSIF seen_id IS NOT NULL THEN
            refused := format('a new data key is made fresh: this one is data key %s (its check value or wrapped'
                              ' key is that key''s), and a key''s material never comes back', seen_id);
        END IF;
    ELSIF OLD.check_value IS NOT NULL AND NEW.check_value IS DISTINCT FROM OLD.check_value THEN
        refused := format('the check value of data key %s is set once', OLD.id);
    ELSIF NEW.wrapped_key IS DISTINCT FROM OLD.wrapped_key
          AND vault.kek_version(NEW.wrapped_key) <= vault.kek_version(OLD.wrapped_key) THEN
        refused := format('data key %s is rewrapped only under a newer KEK version', OLD.id);
    ELSIF seen_id IS NOT NULL THEN
        refused := format('data key %s may not take the check value or wrapped key of data key %s', OLD.id, seen_id);
    ELSIF NEW.retired_at IS DISTINCT FROM OLD.retired_at AND NOT (NEW.state = 'retired' AND OLD.state <> 'retired') THEN
        refused := format('retired_at of data key %s changes only when it is retired', OLD.id);
    ELSIF NEW.state IS DISTINCT FROM OLD.state THEN
        CASE format('%s: %s -> %s', OLD.purpose, OLD.state, NEW.state)
        WHEN 'encryption: active -> decrypt_only' THEN
            NULL;  -- a new active DEK by commit: data_keys_keep_an_active_key
        WHEN 'encryption: decrypt_only -> retired' THEN
            IF EXISTS (SELECT 1 FROM vault.tokens t WHERE t.dek_id = OLD.id AND t.sealed IS NOT NULL) THEN
                refused := format('data key %s still seals stored values: re-encrypt them first', OLD.id);
            END IF;
        WHEN 'fingerprint: pending -> active' THEN
            IF EXISTS (SELECT 1 FROM vault.data_keys k WHERE k.purpose = 'fingerprint' AND k.state = 'active'
                       AND k.id <> OLD.id) THEN
                refused := format('fingerprint key %s becomes active only in place of the active one', OLD.id);
            END IF;
        WHEN 'fingerprint: active -> retired' THEN
            SELECT k.id INTO pending_id FROM vault.data_keys k WHERE k.purpose = 'fingerprint' AND k.state = 'pending';
            IF pending_id IS NULL OR EXISTS (
                SELECT 1 FROM vault.tokens t
                WHERE t.fingerprint IS NOT NULL AND t.next_fingerprint IS NULL AND t.fingerprint_key_id <> pending_id) THEN
                refused := format('fingerprint key %s is retired only by the re-index, once every value has a'
                                  ' fingerprint under the pending key: else equal values would get a second token', OLD.id);
            END IF;
        ELSE
            refused := format('%s key %s may not go from %s to %s%s', OLD.purpose, OLD.id, OLD.state, NEW.state,
                              CASE WHEN OLD.purpose = 'audit' THEN ' (audit keys are never retired: their hashes'
                                   ' name the reveals and erasures of the past)' ELSE '' END);
        END CASE;
    END IF;
    IF refused IS NOT NULL THEN
        RAISE EXCEPTION 'vault.data_keys: %', refused USING ERRCODE = 'check_violation',
            HINT = 'keys change only through the key rotation commands (docs/key-rotation.md)';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;

RESET ROLE;

REVOKE ALL ON vault.data_key_check_values FROM PUBLIC;
REVOKE ALL ON FUNCTION vault.record_data_key_check_value(), vault.data_key_material_seen(integer, bytea, text)
    FROM PUBLIC;
