-- 1. Every token's prefix is its row's type (review 28, F2 (c) and F7): CHECK tokens_type_of_prefix.
-- 2. vault.erase_tokens checks the types its audit row names against the rows it erases (F7): below.
--
-- 0033 refused a row of an unknown type. The serving role could still insert `ip_…` rows of type
-- 'device_id' (and `dev_…` rows of type 'ip', or tokens of neither prefix): vault.erase_tokens
-- judged a token's type by its prefix, so an erase row could name 'ip' for a device_id erasure.
-- The constraint below refuses such a row; the types of TokenType (vault_service/domain/token_types.py)
-- and their prefixes are written out here (a unit test keeps them equal). Adding a type is a
-- migration that replaces this constraint and 0033's.
--
-- A row of a known type and prefix whose sealed value is garbage (the serving role has no data key)
-- is not something a CHECK can see: `reencrypt` sets such a row aside and says so, `reindex` stops
-- on it with a `failed:` outcome (vault_service/service/rotation.py; docs/key-rotation.md).
--
-- Locking (review 28, F4): ADD CONSTRAINT ... NOT VALID takes an ACCESS EXCLUSIVE lock on
-- vault.tokens; VALIDATE then reads every row while it is held (one transaction per file). While
-- the migration WAITS for that lock (behind a transaction that has touched vault.tokens), its queued
-- request blocks every later Tokenize, Detokenize and Erase too: lock_timeout bounds that wait,
-- hence 1 s here (0033 used 10 s: calls stalled up to 10 s). When it runs out the migration fails
-- with LockNotAvailable, changes nothing, and is simply run again. Measured: docs/scaling.md,
-- "Migrations 0033 and 0034".
--
-- A row whose prefix is not its type already there makes VALIDATE fail; the migration then stops
-- with a message saying how many such rows there are and what to do, never skips.
SET ROLE tokenvault_owner;

DO $$
DECLARE
    mismatched bigint;
    previous_lock_timeout text := current_setting('lock_timeout');
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'vault.tokens'::regclass AND conname = 'tokens_type_of_prefix' AND convalidated) THEN
        RETURN;
    END IF;
    PERFORM set_config('lock_timeout', '1s', true);
    ALTER TABLE vault.tokens DROP CONSTRAINT IF EXISTS tokens_type_of_prefix;
    ALTER TABLE vault.tokens ADD CONSTRAINT tokens_type_of_prefix CHECK (
        (token_type = 'ip' AND starts_with(token, 'ip_'))
        OR (token_type = 'device_id' AND starts_with(token, 'dev_'))
    ) NOT VALID;
    BEGIN
        ALTER TABLE vault.tokens VALIDATE CONSTRAINT tokens_type_of_prefix;
    EXCEPTION WHEN check_violation THEN
        SELECT count(*) INTO mismatched FROM vault.tokens
        WHERE NOT ((token_type = 'ip' AND starts_with(token, 'ip_'))
                   OR (token_type = 'device_id' AND starts_with(token, 'dev_')));
        RAISE EXCEPTION 'migration 0034 stopped: vault.tokens holds % row(s) whose token prefix is not its type'
                        ' (ip_ for ip, dev_ for device_id); nothing was changed', mismatched
            USING ERRCODE = 'check_violation',
                  DETAIL = 'such a row was inserted with the serving role''s credentials (its issue audit row names'
                           ' the session); an erasure of it would be audited under the wrong type',
                  HINT = 'investigate, then as the database owner delete those rows and their kept copies'
                         ' (docs/key-rotation.md, "prefix is not its type"): SELECT id, token_type FROM vault.tokens'
                         ' WHERE NOT ((token_type = ''ip'' AND starts_with(token, ''ip_''))'
                         ' OR (token_type = ''device_id'' AND starts_with(token, ''dev_''))); then run the migrations again';
    END;
    PERFORM set_config('lock_timeout', previous_lock_timeout, true);
END
$$;

RESET ROLE;

-- vault.erase_tokens: 0033's function, and the rows it erases are checked against the token types
-- its audit row names (review 28, F7). The audit row's token_types stay the call's (the service's
-- Erase names the types of every token of the request, as every audit row does, including tokens it
-- refused or did not find), but every row erased must be of a type named, by its stored token_type,
-- not only by its token's prefix; otherwise nothing is erased and nothing is written.
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
    erased_types text[];
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
        RETURNING token, token_type
    ) SELECT coalesce(array_agg(token), '{}'), coalesce(array_agg(DISTINCT token_type), '{}')
      INTO erased, erased_types FROM done;
    -- The types the audit row names are checked against the rows erased, as stored (review 28, F7):
    -- not only against the tokens' prefixes, which a row of another type could carry before 0034.
    IF NOT erased_types <@ named_types THEN
        RAISE EXCEPTION 'erasure refused: token types % leave out %, the type of a row it would erase;'
                        ' nothing was erased', quote_literal(p_token_types),
                        (SELECT string_agg(t, ',' ORDER BY t) FROM unnest(erased_types) AS e(t)
                         WHERE t <> ALL (named_types))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'vault.tokens holds a row whose type is not its token''s prefix: CHECK tokens_type_of_prefix'
                         ' (migration 0034) refuses one; see whether the database owner dropped it';
    END IF;
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
