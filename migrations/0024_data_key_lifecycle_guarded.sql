-- The serving role moves data keys only along their lifecycle (ninth insider round, 3 Dec,
-- Breaks 1 and 9).
--
-- The serving role holds UPDATE (wrapped_key, state, retired_at) on vault.data_keys for the key
-- rotation, with nothing restricting the transitions. Retiring the audit key made every bootstrap
-- make a new one, and `audit who-saw` answered "0 reveal(s)" under "intact" for every earlier
-- token; retiring the active fingerprint key gave every value already in the vault a second
-- token after the next start. Replacing the audit key's wrapped key by a fresh data key wrapped
-- by the KEK (the vault's AppRole may ask Transit for one) did the same without touching `state`.
--
-- 1. A BEFORE INSERT/UPDATE/DELETE trigger lets a session that is not the owner's (the owner,
--    the migrator and superusers may do anything: the threat model's owner section) change a key
--    only the way the service does (vault_service/adapters/postgres/keys.py):
--      insert   a key `active`, or a fingerprint key `pending`        (ensure_active_key, add_key)
--      encryption   active -> decrypt_only       (a new DEK; checked at commit: a new active one)
--      encryption   decrypt_only -> retired      only when no stored value is sealed under it
--      fingerprint  pending -> active            when no other fingerprint key is active
--      fingerprint  active -> retired            only with a pending key every live value has a
--                                                fingerprint under (the re-index's promotion)
--      audit        none: audit keys are never retired (their hashes name past reveals)
--      wrapped_key  only to a newer KEK version (a rewrap; `vault:vN:` prefix)
--      retired_at   only together with `-> retired`
--      check_value  set once (NULL -> value)
--    and never deletes one (no grant allows it either).
-- 2. A deferred constraint trigger checks at commit that a purpose whose active key left
--    `active` has an active key again (add_key demotes the old DEK before inserting the new one).
-- 3. `check_value`: BLAKE2b keyed with the data key (vault_service/domain/key_check.py), set by
--    the service when it makes a key, or once for keys made before this migration. It is written
--    into the key's hash-chained `data-key-insert`/`data-key-update` row, so the chain records
--    which key each audit key id is; a rewrap keeps the plaintext, hence the check value.
--    `audit verify` and `who-saw` refuse when a loaded audit key's check value is not the one the
--    chain recorded (the wrapped key was replaced), and the service refuses to load a key whose
--    check value differs from the row's.
SET ROLE tokenvault_owner;

ALTER TABLE vault.data_keys ADD COLUMN IF NOT EXISTS check_value bytea;

-- The KEK version of a Transit ciphertext `vault:v<N>:...`; 0 when it is not one.
CREATE OR REPLACE FUNCTION vault.kek_version(wrapped text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN wrapped OPERATOR(pg_catalog.~) '^vault:v[0-9]{1,9}:'
                THEN pg_catalog.split_part(pg_catalog.split_part(wrapped, ':', 2), 'v', 2)::pg_catalog.int4
                ELSE 0 END
$$;

CREATE OR REPLACE FUNCTION vault.data_keys_lifecycle() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pending_id integer;
    refused text;
BEGIN
    IF pg_has_role(session_user, 'tokenvault_owner', 'MEMBER') THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'DELETE' THEN
        refused := format('data key %s is never deleted', OLD.id);
    ELSIF TG_OP = 'INSERT' THEN
        IF NOT (NEW.state = 'active' OR (NEW.state = 'pending' AND NEW.purpose = 'fingerprint')) THEN
            refused := format('a new %s key starts active (a fingerprint key may start pending), not %s',
                              NEW.purpose, NEW.state);
        END IF;
    ELSIF OLD.check_value IS NOT NULL AND NEW.check_value IS DISTINCT FROM OLD.check_value THEN
        refused := format('the check value of data key %s is set once', OLD.id);
    ELSIF NEW.wrapped_key IS DISTINCT FROM OLD.wrapped_key
          AND vault.kek_version(NEW.wrapped_key) <= vault.kek_version(OLD.wrapped_key) THEN
        refused := format('data key %s is rewrapped only under a newer KEK version', OLD.id);
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
DROP TRIGGER IF EXISTS data_keys_lifecycle ON vault.data_keys;
CREATE TRIGGER data_keys_lifecycle BEFORE INSERT OR UPDATE OR DELETE ON vault.data_keys
    FOR EACH ROW EXECUTE FUNCTION vault.data_keys_lifecycle();

CREATE OR REPLACE FUNCTION vault.data_keys_keep_an_active_key() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_has_role(session_user, 'tokenvault_owner', 'MEMBER')
       AND NOT EXISTS (SELECT 1 FROM vault.data_keys k WHERE k.purpose = OLD.purpose AND k.state = 'active') THEN
        RAISE EXCEPTION 'vault.data_keys: no active % key left', OLD.purpose USING ERRCODE = 'check_violation',
            HINT = 'a key leaves active only for a newer one, in the same transaction';
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS data_keys_keep_an_active_key ON vault.data_keys;
CREATE CONSTRAINT TRIGGER data_keys_keep_an_active_key AFTER UPDATE ON vault.data_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (OLD.state = 'active' AND NEW.state <> 'active')
    EXECUTE FUNCTION vault.data_keys_keep_an_active_key();

-- The chained data-key rows name each key's check value: the chain records which key an id is.
CREATE OR REPLACE FUNCTION vault.audit_data_keys_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    summary text;
    changed_count bigint;
BEGIN
    SELECT count(*), string_agg(format('%s %s %s', k.id, k.purpose, k.state)
                                || coalesce(' check ' || encode(k.check_value, 'hex'), ''), ', ' ORDER BY k.id)
    INTO changed_count, summary FROM changed k;
    IF changed_count > 0 THEN
        INSERT INTO vault.audit_log (client, action, item_count, outcome)
        VALUES (vault.audit_session(), 'data-key-' || lower(TG_OP), changed_count, 'ok: ' || summary);
    END IF;
    RETURN NULL;
END
$$;

RESET ROLE;

REVOKE ALL ON FUNCTION vault.kek_version(text), vault.data_keys_lifecycle(),
    vault.data_keys_keep_an_active_key() FROM PUBLIC;
-- The service records the check value of a key made before this migration, once.
GRANT UPDATE (check_value) ON vault.data_keys TO tokenvault_vault;
