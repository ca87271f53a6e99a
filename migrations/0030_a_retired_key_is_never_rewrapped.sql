-- A retired data key is never rewrapped (review 23, R23-4).
--
-- 0027 keeps a retired key's material from coming back under a new id, but the lifecycle trigger
-- still let a session other than the owner's rewrap a RETIRED key's own row under a newer KEK
-- version (the serving role, with a rewrap the vault's AppRole may ask of Transit): the retired key
-- then survived the operators' trim in its own row, and what crypto-shredding was to make unreadable
-- stayed openable through it. The service rewraps only live keys and audit keys
-- (KeyManager.rewrap_outdated), so nothing legitimate changes. The trigger function is restated
-- whole (as 0028 restated it), with that one refusal added.
SET ROLE tokenvault_owner;

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
    ELSIF NEW.wrapped_key IS DISTINCT FROM OLD.wrapped_key AND OLD.state = 'retired' THEN
        refused := format('data key %s is retired: a retired key is never rewrapped (what it sealed is to stay'
                          ' unreadable once the KEK versions wrapping it are trimmed)', OLD.id);
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
                WHERE t.fingerprint IS NOT NULL AND t.fingerprint_key_id <> pending_id
                  AND (t.next_fingerprint IS NULL OR t.next_fingerprint_key_id IS DISTINCT FROM pending_id)) THEN
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
