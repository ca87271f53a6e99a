-- An erasure is done only with its own audit row stored (third insider round, 3 Dec).
--
-- vault.erase_tokens (0016) read its audit row back by the id its INSERT returned and checked
-- only that a row with that id, action 'erase' and the same client existed. A rule on
-- vault.audit_log diverting the INSERT elsewhere (DO INSTEAD INSERT INTO another table ...
-- RETURNING) with a trigger there setting the id to the officer's earlier, genuine erase row
-- passed that check: the value was erased, no row recorded it, and audit-verify reported the log
-- intact (tests/integration/test_erase_audit_diverted.py).
--
-- The function now reads the newest id before its INSERT (max(id): the primary key's index) and
-- requires the returned id to be greater - ids come from one sequence, so the row this INSERT
-- wrote is newer than every row committed before it, and an earlier row's id is refused - and
-- the row read back by that id to hold exactly what was written (client, certificate, action,
-- purpose, token types, item count, outcome) with its hash computed, and to be the newest row
-- in the log now. Otherwise it raises and the erasure rolls back. Everything else is 0016's
-- function unchanged.
--
-- "Newest now" holds for a genuine append under concurrent load: the audit trigger (0008) takes
-- an advisory lock held to commit before it numbers a row, so no other session can append
-- between this INSERT and the check. Both max(id) reads use the primary key's index.
SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION vault.erase_tokens(
    p_tokens text[], p_item_count integer, p_client text, p_client_serial text, p_client_cert_sha256 text,
    p_purpose text, p_token_types text
) RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    erased text[];
    audit_id bigint;
    newest_before bigint;
    written_outcome text;
BEGIN
    WITH done AS (
        UPDATE vault.tokens SET sealed = NULL, fingerprint = NULL, next_fingerprint = NULL, erased_at = now()
        WHERE id IN (SELECT r.id FROM unnest(p_tokens) AS u(token)
                     CROSS JOIN LATERAL (SELECT id FROM vault.tokens x WHERE x.token = u.token LIMIT 1) AS r)
          AND sealed IS NOT NULL
        RETURNING token
    ) SELECT coalesce(array_agg(token), '{}') INTO erased FROM done;
    written_outcome := format('ok: %s erased, %s not erased', cardinality(erased), p_item_count - cardinality(erased));
    SELECT coalesce(max(a.id), 0) INTO newest_before FROM vault.audit_log a;
    INSERT INTO vault.audit_log (client, client_serial, client_cert_sha256, action, purpose, token_types,
                                 item_count, outcome)
    VALUES (p_client, p_client_serial, p_client_cert_sha256, 'erase', p_purpose, p_token_types, p_item_count,
            written_outcome)
    RETURNING id INTO audit_id;
    IF audit_id IS NULL OR audit_id <= newest_before OR NOT EXISTS (
        SELECT 1 FROM vault.audit_log a
        WHERE a.id = audit_id AND a.action = 'erase' AND a.client IS NOT DISTINCT FROM p_client
          AND a.client_serial IS NOT DISTINCT FROM p_client_serial
          AND a.client_cert_sha256 IS NOT DISTINCT FROM p_client_cert_sha256
          AND a.purpose IS NOT DISTINCT FROM p_purpose AND a.token_types IS NOT DISTINCT FROM p_token_types
          AND a.item_count IS NOT DISTINCT FROM p_item_count AND a.outcome = written_outcome
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

REVOKE ALL ON FUNCTION vault.erase_tokens(text[], integer, text, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.erase_tokens(text[], integer, text, text, text, text, text) TO tokenvault_vault;
