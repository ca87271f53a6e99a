-- 1. vault.tokens holds rows of the types the vault makes, and nothing else (review 26, R26-3; review 27, R27-4).
-- 2. vault.erase_tokens writes only erase rows that add up (review 25, R25-5): below.
--
-- The serving role holds INSERT on vault.tokens, and token_type had no CHECK: a row of type
-- 'bogus' inserted with the service's credentials stopped `reencrypt` and `reindex` ("unknown token
-- type") and, once re-sealed, `retire-kek-versions`, every run, until the database owner deleted it
-- (docs/key-rotation.md); the role could plant it again at will. The constraint below refuses it.
--
-- The known types are vault_service/domain/token_types.py's TokenType (a unit test keeps the two
-- lists equal). Adding a type is a migration that replaces this constraint.
--
-- On a live table: ADD CONSTRAINT ... NOT VALID takes an ACCESS EXCLUSIVE lock on vault.tokens
-- and scans nothing; VALIDATE CONSTRAINT then reads every row. The migrator applies a file in one
-- transaction, so the ACCESS EXCLUSIVE lock is held until the scan ends and the file commits:
-- Tokenize, Detokenize and Erase wait for that long (measured: docs/scaling.md, "Migration 0033").
-- A lock_timeout bounds the wait for the lock itself, so the migration never queues behind a long
-- transaction while every call queues behind it; it then fails and can simply be run again.
--
-- A row of an unknown type already there makes VALIDATE fail; the migration then stops with a
-- message saying how many such rows there are and what to do (the runbook's remedy), never skips.
SET ROLE tokenvault_owner;

DO $$
DECLARE
    unknown bigint;
    previous_lock_timeout text := current_setting('lock_timeout');
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'vault.tokens'::regclass AND conname = 'tokens_known_type' AND convalidated) THEN
        RETURN;
    END IF;
    PERFORM set_config('lock_timeout', '10s', true);
    ALTER TABLE vault.tokens DROP CONSTRAINT IF EXISTS tokens_known_type;
    ALTER TABLE vault.tokens ADD CONSTRAINT tokens_known_type CHECK (token_type IN ('ip', 'device_id')) NOT VALID;
    BEGIN
        ALTER TABLE vault.tokens VALIDATE CONSTRAINT tokens_known_type;
    EXCEPTION WHEN check_violation THEN
        SELECT count(*) INTO unknown FROM vault.tokens WHERE token_type NOT IN ('ip', 'device_id');
        RAISE EXCEPTION 'migration 0033 stopped: vault.tokens holds % row(s) of a token type the vault never makes'
                        ' (known: ip, device_id); nothing was changed', unknown
            USING ERRCODE = 'check_violation',
                  DETAIL = 'such a row was inserted with the serving role''s credentials (its issue audit row names'
                           ' the session); it stops reencrypt and reindex until it is deleted',
                  HINT = 'investigate, then as the database owner delete those rows and their kept copies'
                         ' (docs/key-rotation.md, "unknown token type"): SELECT token, token_type FROM vault.tokens'
                         ' WHERE token_type NOT IN (''ip'', ''device_id''); then run the migrations again';
    END;
    PERFORM set_config('lock_timeout', previous_lock_timeout, true);
END
$$;

RESET ROLE;

-- vault.erase_tokens writes an erase row that adds up (review 25, R25-5).
--
-- Called directly, with the serving role's credentials, it wrote a chained erase row of whatever it
-- was given: `ok: 0 erased, -7 not erased` under `privacy-officer`, a NULL purpose ending in a bare
-- NotNullViolation. The service calls it with the tokens it may erase (at least one; a call with
-- none writes its own `ok: 0 erased` row), the call's item count (every item of the request, so at
-- least as many as the tokens given, at most MAX_ITEMS_PER_CALL = 10,000, the gRPC edge's bound),
-- the caller's name, certificate serial and digest, a purpose, and the sorted, comma-separated
-- names of the types present. Anything else is refused now, with a named error, and nothing is
-- erased or written: no tokens, a NULL or empty token, an item count that is NULL, negative, below
-- the tokens' count or above 10,000, a NULL or empty client, a NULL serial, certificate digest or
-- purpose (the service writes an empty one where it has none, or withholds the purpose), token types that are not a sorted list of known types without repeats, or that leave out the
-- type of a token given (its prefix: `ip_`, `dev_`). What the database still cannot check: that the
-- client, serial and digest are the caller's (it has no certificate), as for every audit row the
-- service writes (docs/threat-model.md, the serving role, *Left*).
--
-- The rest is 0023's function as it was.
SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION vault.erase_tokens(
    p_tokens text[], p_token_hashes bytea[], p_item_count integer, p_client text, p_client_serial text,
    p_client_cert_sha256 text, p_purpose text, p_token_types text
) RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    erased text[];
    erased_hashes bytea[];
    audit_id bigint;
    newest_before bigint;
    written_outcome text;
    in_statistics text;
    named_types text[] := string_to_array(p_token_types, ',');
    nonsense text;
BEGIN
    IF coalesce(cardinality(p_tokens), 0) = 0 OR array_position(p_tokens, NULL) IS NOT NULL
       OR array_position(p_tokens, '') IS NOT NULL THEN
        nonsense := 'no tokens, or a NULL or empty one (a call with nothing to erase writes its own ok: 0 erased row)';
    ELSIF p_item_count IS NULL OR p_item_count < cardinality(p_tokens) OR p_item_count > 10000 THEN
        nonsense := format('an item count of %s for %s token(s): the call''s items, at least the tokens given,'
                           ' at most 10000', coalesce(p_item_count::text, 'NULL'), cardinality(p_tokens));
    ELSIF nullif(p_client, '') IS NULL OR p_client_serial IS NULL OR p_client_cert_sha256 IS NULL
          OR p_purpose IS NULL THEN
        nonsense := 'a NULL or empty client, or a NULL certificate serial, certificate digest or purpose'
                    ' (a withheld purpose is empty, not NULL)';
    ELSIF named_types IS NULL OR cardinality(named_types) = 0
          OR NOT named_types <@ ARRAY['device_id', 'ip']
          OR named_types <> ARRAY(SELECT DISTINCT t FROM unnest(named_types) AS u(t) ORDER BY t)
          OR EXISTS (SELECT 1 FROM unnest(p_tokens) AS u(token)
                     WHERE NOT (token LIKE 'ip\_%' AND 'ip' = ANY (named_types))
                       AND NOT (token LIKE 'dev\_%' AND 'device_id' = ANY (named_types))) THEN
        nonsense := format('token types %L: the sorted names of the known types present (device_id, ip),'
                           ' each token''s among them', p_token_types);
    END IF;
    IF nonsense IS NOT NULL THEN
        RAISE EXCEPTION 'erasure refused: % ; nothing was erased', nonsense
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'vault.erase_tokens is called by the vault service''s Erase, with the call as it came';
    END IF;
    in_statistics := vault.erased_columns_in_statistics();
    IF in_statistics IS NOT NULL THEN
        RAISE EXCEPTION 'erasure refused: statistics may keep the values of %; nothing was erased', in_statistics
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'ALTER TABLE ... ALTER COLUMN ... SET STATISTICS 0 on each, then remove what was'
                      ' collected as migration no_statistics_of_values does (or drop the extended statistics)';
    END IF;
    IF p_token_hashes IS NULL OR cardinality(p_token_hashes) <> coalesce(cardinality(p_tokens), 0)
       OR array_position(p_token_hashes, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'erasure refused: one keyed token hash is needed per token; nothing was erased'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH done AS (
        UPDATE vault.tokens SET sealed = NULL, fingerprint = NULL, next_fingerprint = NULL, erased_at = now()
        WHERE id IN (SELECT r.id FROM unnest(p_tokens) AS u(token)
                     CROSS JOIN LATERAL (SELECT id FROM vault.tokens x WHERE x.token = u.token LIMIT 1) AS r)
          AND sealed IS NOT NULL
        RETURNING token
    ) SELECT coalesce(array_agg(token), '{}') INTO erased FROM done;
    -- The hash given with each erased token, in the order given, each token once (NULL when none).
    SELECT array_agg(given.h ORDER BY given.n) INTO erased_hashes
    FROM (SELECT DISTINCT ON (u.token) u.token, u.h, u.n
          FROM unnest(p_tokens, p_token_hashes) WITH ORDINALITY AS u(token, h, n)
          ORDER BY u.token, u.n) AS given
    JOIN unnest(erased) AS e(token) ON e.token = given.token;
    written_outcome := format('ok: %s erased, %s not erased', cardinality(erased), p_item_count - cardinality(erased));
    SELECT coalesce(max(a.id), 0) INTO newest_before FROM vault.audit_log a;
    INSERT INTO vault.audit_log (client, client_serial, client_cert_sha256, action, purpose, token_types,
                                 item_count, outcome, revealed)
    VALUES (p_client, p_client_serial, p_client_cert_sha256, 'erase', p_purpose, p_token_types, p_item_count,
            written_outcome, erased_hashes)
    RETURNING id INTO audit_id;
    IF audit_id IS NULL OR audit_id <= newest_before OR NOT EXISTS (
        SELECT 1 FROM vault.audit_log a
        WHERE a.id = audit_id AND a.action = 'erase' AND a.client IS NOT DISTINCT FROM p_client
          AND a.client_serial IS NOT DISTINCT FROM p_client_serial
          AND a.client_cert_sha256 IS NOT DISTINCT FROM p_client_cert_sha256
          AND a.purpose IS NOT DISTINCT FROM p_purpose AND a.token_types IS NOT DISTINCT FROM p_token_types
          AND a.item_count IS NOT DISTINCT FROM p_item_count AND a.outcome = written_outcome
          AND a.revealed IS NOT DISTINCT FROM erased_hashes
          AND a.row_hash IS NOT NULL
    ) OR audit_id <> (SELECT max(a.id) FROM vault.audit_log a) THEN
        RAISE EXCEPTION 'the erasure''s audit row was not stored in vault.audit_log; nothing was erased'
            USING ERRCODE = 'integrity_constraint_violation',
                  HINT = 'look for rules or triggers on vault.audit_log that drop, divert or renumber rows';
    END IF;
    RETURN QUERY SELECT unnest(erased);
END
$$;

RESET ROLE;

REVOKE ALL ON FUNCTION vault.erase_tokens(text[], bytea[], integer, text, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.erase_tokens(text[], bytea[], integer, text, text, text, text, text)
    TO tokenvault_vault;
