-- An erasure's audit row names the tokens it erased (eighth insider round, 3 Dec, Finding 3).
--
-- vault.erase_tokens wrote client, certificate, purpose, token types, item count and outcome, but
-- not which tokens: "who erased this token, under which case?" had no answer inside the hash
-- chain, only vault.tokens.erased_at, a column the database owner may set to any time (and two
-- erasures in the same moment make ambiguous).
--
-- The function now takes, beside each token, its keyed hash - the hash a reveal stores in
-- vault.audit_log.revealed (BLAKE2b keyed with the vault's audit data key, computed by the
-- service, which holds the key; the database never sees it) - and stores in the erase row's
-- `revealed` the hashes of the tokens it erased, in the order given, each once. A token that had
-- no value left (never issued, already erased) is not named; an erasure that erased nothing
-- stores NULL, as a reveal that revealed nothing does. `revealed` is covered by the row hash
-- (0006), so who-saw lists the erasure of a token from the verified chain. It refuses (and
-- erases nothing) unless there is one non-NULL hash per token.
--
-- The function keeps every guarantee of 0022's version: the refusal while statistics may keep
-- the values an erasure clears; one statement erasing by the token's hash index; the audit row
-- written in the same transaction, newer than every row before it, read back by its id holding
-- exactly what was written (now with the hashes too) and the newest row of the log, else the
-- erasure rolls back; SECURITY DEFINER owned by tokenvault_owner with search_path pg_catalog,
-- pg_temp; EXECUTE for the serving role only. The version without hashes is dropped, so no
-- erasure is written without them. The service falls back to it (logging an error per erasure)
-- on a database that has not run this migration yet: roll the service out first, then migrate.
SET ROLE tokenvault_owner;

DROP FUNCTION IF EXISTS vault.erase_tokens(text[], integer, text, text, text, text, text);

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
    in_statistics text := vault.erased_columns_in_statistics();
BEGIN
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
