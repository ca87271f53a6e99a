-- A next fingerprint counts only under the pending key it was written for (attack 24, F2).
--
-- vault.set_next_fingerprints (SECURITY DEFINER, granted to the serving role) wrote the caller's
-- bytes into next_fingerprint of any live row that had none, with no fingerprint rotation under
-- way, and wrote its audit row under a client name the caller chose. The serving role planted
-- garbage in every device id's next_fingerprint; the next routine rotate-fingerprint-key +
-- reindex skipped those rows (its work list was `next_fingerprint IS NULL`), the promotion guard
-- (0024) passed, compaction moved the garbage into `fingerprint`, and after a restart every known
-- device id got a second token. `audit verify` said "intact".
--
-- 1. vault.tokens.next_fingerprint_key_id: the pending key a row's next fingerprint was written
--    under. Only the database writes it: set_next_fingerprints sets it to the pending key, and a
--    trigger sets it on each inserted row that carries a next fingerprint (the service writes one
--    under the pending key while a rotation is under way; the trigger runs only for those rows,
--    so inserts outside a rotation pay nothing). The serving role holds no privilege on it.
-- 2. set_next_fingerprints refuses unless a fingerprint key is pending; it writes only rows whose
--    fingerprint is under another key and whose next fingerprint is missing or not under the
--    pending key (a stale or planted one is re-done, a pending one is never overwritten). Its
--    audit row names the database session (vault.audit_session(), as the rows the database writes
--    on its own), the pending key, and the actor the caller claims (no longer the row's client).
-- 3. An insert carrying a next fingerprint while no key is pending gets no key id: it counts for
--    nothing (the service's writer that does it holds a key generation rotated away meanwhile,
--    and rolls the insert back itself: StaleKeys, checked after the insert).
-- 4. The promotion (the lifecycle trigger's `fingerprint: active -> retired`, restated whole from
--    0027) counts only next fingerprints under the pending key; compaction moves only those under
--    the key now active. The re-index's work list (vault_service/adapters/postgres/token_rekeying.py)
--    is every row whose next fingerprint is not under the pending key.
-- 5. Rows already holding a next fingerprint: during a rotation they are left without a key id,
--    so the re-index re-does them (a legitimate one is written again, the same bytes); after a
--    promotion, rows waiting for compaction (fingerprint under an older key) are given the active
--    key's id; any other next fingerprint (no rotation under way: planted or stale) is cleared.
SET ROLE tokenvault_owner;

ALTER TABLE vault.tokens ADD COLUMN IF NOT EXISTS next_fingerprint_key_id integer;

DO $$
DECLARE
    pending integer;
    active integer;
BEGIN
    SELECT k.id INTO pending FROM vault.data_keys k WHERE k.purpose = 'fingerprint' AND k.state = 'pending';
    SELECT max(k.id) INTO active FROM vault.data_keys k WHERE k.purpose = 'fingerprint' AND k.state = 'active';
    IF pending IS NULL AND active IS NOT NULL THEN
        UPDATE vault.tokens SET next_fingerprint_key_id = active
        WHERE next_fingerprint IS NOT NULL AND next_fingerprint_key_id IS NULL AND fingerprint_key_id <> active;
        UPDATE vault.tokens SET next_fingerprint = NULL, next_fingerprint_key_id = NULL
        WHERE next_fingerprint IS NOT NULL AND fingerprint_key_id = active;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION vault.tokens_next_fingerprint_key() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pending integer;
BEGIN
    IF pg_has_role(session_user, 'tokenvault_owner', 'MEMBER') AND NEW.next_fingerprint_key_id IS NOT NULL THEN
        RETURN NEW;
    END IF;
    SELECT k.id INTO pending FROM vault.data_keys k WHERE k.purpose = 'fingerprint' AND k.state = 'pending';
    NEW.next_fingerprint_key_id := pending;  -- NULL when none is: a next fingerprint under no key counts for nothing
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS tokens_next_fingerprint_key ON vault.tokens;
CREATE TRIGGER tokens_next_fingerprint_key BEFORE INSERT ON vault.tokens
    FOR EACH ROW WHEN (NEW.next_fingerprint IS NOT NULL) EXECUTE FUNCTION vault.tokens_next_fingerprint_key();

CREATE OR REPLACE FUNCTION vault.set_next_fingerprints(p_tokens text[], p_fingerprints bytea[], p_actor text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed integer;
    pending integer;
BEGIN
    SELECT k.id INTO pending FROM vault.data_keys k WHERE k.purpose = 'fingerprint' AND k.state = 'pending';
    IF pending IS NULL THEN
        RAISE EXCEPTION 'set_next_fingerprints: no fingerprint key is pending: next fingerprints are written only'
            ' by the re-index of a fingerprint-key rotation' USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE vault.tokens t SET next_fingerprint = u.fp, next_fingerprint_key_id = pending
    FROM unnest(p_tokens, p_fingerprints) AS u(token, fp)
    CROSS JOIN LATERAL (SELECT id FROM vault.tokens x WHERE x.token = u.token LIMIT 1) AS r
    WHERE t.id = r.id AND u.fp IS NOT NULL AND t.fingerprint IS NOT NULL AND t.fingerprint_key_id <> pending
      AND (t.next_fingerprint IS NULL OR t.next_fingerprint_key_id IS DISTINCT FROM pending);
    GET DIAGNOSTICS changed = ROW_COUNT;
    INSERT INTO vault.audit_log (client, action, item_count, outcome)
    VALUES (vault.audit_session(), 'reindex', coalesce(array_length(p_tokens, 1), 0),
            format('ok: %s fingerprinted under pending key %s, for %s', changed, pending, left(coalesce(p_actor, ''), 128)));
    RETURN changed;
END
$$;

CREATE OR REPLACE FUNCTION vault.compact_fingerprints(p_active_key integer, p_limit integer, p_actor text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed integer;
BEGIN
    UPDATE vault.tokens SET fingerprint = next_fingerprint, fingerprint_key_id = p_active_key,
                            next_fingerprint = NULL, next_fingerprint_key_id = NULL
    WHERE id IN (
        SELECT id FROM vault.tokens
        WHERE fingerprint IS NOT NULL AND next_fingerprint IS NOT NULL AND fingerprint_key_id <> p_active_key
          AND next_fingerprint_key_id = p_active_key
          AND EXISTS (SELECT 1 FROM vault.data_keys k WHERE k.id = p_active_key AND k.state = 'active'
                      AND k.purpose = 'fingerprint')
        ORDER BY token_type, next_fingerprint
        LIMIT p_limit FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed > 0 THEN
        INSERT INTO vault.audit_log (client, action, item_count, outcome)
        VALUES (p_actor, 'compact', changed, format('ok: %s fingerprints moved to key %s', changed, p_active_key));
    END IF;
    RETURN changed;
END
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

REVOKE ALL ON FUNCTION vault.tokens_next_fingerprint_key() FROM PUBLIC;
