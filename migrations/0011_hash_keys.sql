-- The vault's two random keys through hash indexes (issue 18).
--
-- A token and a fingerprint are random: a B-tree over them is entered at a random leaf on
-- every lookup and every insert, and once the vault outgrows the CPU's caches each descent
-- costs PostgreSQL several cold pages (the inner page above the leaf, the leaf, and the binary
-- search across it). A hash index reads one bucket page for the same question, and its
-- entries hold a 4-byte hash code instead of the key: half the size of the B-trees it replaces
-- (130 against 227-267 MB each at 3M tokens, measured).
--
-- Uniqueness stays the database's: an exclusion constraint over a hash index refuses a second
-- row with an equal key exactly as a unique index does (SQLSTATE 23P01 instead of 23505), and
-- `INSERT ... ON CONFLICT DO NOTHING` honours it. The fingerprint alone is unique, not
-- (type, fingerprint): it is an HMAC of the type and the value with a NUL between them
-- (vault_service/domain/crypto.py), so equal fingerprints of two types would be an HMAC
-- collision. The table keeps a primary key, a bigint identity in insert order: its B-tree is
-- appended to at the right end, never entered at random.
--
-- This rewrites vault.tokens (the new column) and builds three indexes under an ACCESS
-- EXCLUSIVE lock: about a minute per 10M tokens, during which no token is issued or revealed.
-- Run it at a quiet moment on a large vault.
SET ROLE tokenvault_owner;

ALTER TABLE vault.tokens ADD COLUMN IF NOT EXISTS id bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE vault.tokens ALTER COLUMN token SET NOT NULL;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'tokens_token_unique'
                   AND conrelid = 'vault.tokens'::regclass) THEN
        ALTER TABLE vault.tokens DROP CONSTRAINT tokens_pkey;
        ALTER TABLE vault.tokens ALTER COLUMN token SET NOT NULL;
        ALTER TABLE vault.tokens ADD CONSTRAINT tokens_pkey PRIMARY KEY (id);
        ALTER TABLE vault.tokens ADD CONSTRAINT tokens_token_unique EXCLUDE USING hash (token WITH =);
        ALTER TABLE vault.tokens ADD CONSTRAINT tokens_fingerprint_unique EXCLUDE USING hash (fingerprint WITH =);
        DROP INDEX vault.tokens_type_fingerprint;
    END IF;
END
$$;

-- The functions that change stored values found their rows by token through the primary key,
-- whose uniqueness told the planner "one row per token". An exclusion constraint does not tell
-- it that: on a table without statistics (one that grew since autovacuum last analyzed it) the
-- generic plan of set_next_fingerprints joined a batch's tokens against a scan of the whole
-- table, and reseal_tokens' combined the whole work-list index with the token's. Each token is now one probe
-- of the hash index (a LATERAL subquery with LIMIT 1, as the service's own lookups), and the
-- row is then changed by its id. Bodies otherwise as in migrations 0006 and 0007.
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
        WHERE id IN (SELECT r.id FROM unnest(p_tokens) AS u(token)
                     CROSS JOIN LATERAL (SELECT id FROM vault.tokens x WHERE x.token = u.token LIMIT 1) AS r)
          AND sealed IS NOT NULL
        RETURNING token
    ) SELECT coalesce(array_agg(token), '{}') INTO erased FROM done;
    INSERT INTO vault.audit_log (client, client_serial, client_cert_sha256, action, purpose, token_types,
                                 item_count, outcome)
    VALUES (p_client, p_client_serial, p_client_cert_sha256, 'erase', p_purpose, p_token_types, p_item_count,
            format('ok: %s erased, %s not erased', cardinality(erased), p_item_count - cardinality(erased)));
    RETURN QUERY SELECT unnest(erased);
END
$$;

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
    CROSS JOIN LATERAL (SELECT id FROM vault.tokens x WHERE x.token = u.token LIMIT 1) AS r
    WHERE t.id = r.id AND t.dek_id = u.old_dek AND t.sealed IS NOT NULL;
    GET DIAGNOSTICS changed = ROW_COUNT;
    INSERT INTO vault.audit_log (client, action, item_count, outcome)
    VALUES (p_actor, 'reseal', coalesce(array_length(p_tokens, 1), 0), format('ok: %s re-sealed', changed));
    RETURN changed;
END
$$;

CREATE OR REPLACE FUNCTION vault.set_next_fingerprints(p_tokens text[], p_fingerprints bytea[], p_actor text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed integer;
BEGIN
    UPDATE vault.tokens t SET next_fingerprint = u.fp
    FROM unnest(p_tokens, p_fingerprints) AS u(token, fp)
    CROSS JOIN LATERAL (SELECT id FROM vault.tokens x WHERE x.token = u.token LIMIT 1) AS r
    WHERE t.id = r.id AND t.fingerprint IS NOT NULL AND t.next_fingerprint IS NULL;
    GET DIAGNOSTICS changed = ROW_COUNT;
    INSERT INTO vault.audit_log (client, action, item_count, outcome)
    VALUES (p_actor, 'reindex', coalesce(array_length(p_tokens, 1), 0), format('ok: %s fingerprinted', changed));
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
                            next_fingerprint = NULL
    WHERE id IN (
        SELECT id FROM vault.tokens
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
