-- The re-index clears next fingerprints under the pending key that it finds wrong (review 23, R23-1).
--
-- 0028 ties a next fingerprint to the pending key, but during a rotation the serving role can still
-- call vault.set_next_fingerprints with garbage for rows the re-index has not reached: the re-index
-- then skips them (their next fingerprint is under the pending key) and set_next_fingerprints never
-- overwrites one, so compaction would install the garbage (every such value a second token).
-- The database cannot check a keyed hash; the re-index holds the key. Before it promotes the
-- pending key it recomputes every next fingerprint under it from the row's value, and the rows
-- whose bytes differ it clears here (compare-and-clear: only a row still holding the bytes the
-- re-index found wrong), refuses to promote and fails; its next run recomputes them.
-- A session that calls this clears only what it names with the exact bytes stored: the serving
-- role could already make the re-index re-do a row no other way, and a cleared row is re-done.
SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION vault.clear_next_fingerprints(p_tokens text[], p_fingerprints bytea[], p_actor text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed integer;
    pending integer;
BEGIN
    SELECT k.id INTO pending FROM vault.data_keys k WHERE k.purpose = 'fingerprint' AND k.state = 'pending';
    IF pending IS NULL THEN
        RAISE EXCEPTION 'clear_next_fingerprints: no fingerprint key is pending'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE vault.tokens t SET next_fingerprint = NULL, next_fingerprint_key_id = NULL
    FROM unnest(p_tokens, p_fingerprints) AS u(token, fp)
    CROSS JOIN LATERAL (SELECT id FROM vault.tokens x WHERE x.token = u.token LIMIT 1) AS r  -- a probe per token
    WHERE t.id = r.id AND t.next_fingerprint = u.fp AND t.next_fingerprint_key_id = pending;
    GET DIAGNOSTICS changed = ROW_COUNT;
    INSERT INTO vault.audit_log (client, action, item_count, outcome)
    VALUES (vault.audit_session(), 'reindex', changed,
            format('cleared: %s next fingerprints under pending key %s not written by the re-index, for %s',
                   changed, pending, left(coalesce(p_actor, ''), 128)));
    RETURN changed;
END
$$;

RESET ROLE;

REVOKE ALL ON FUNCTION vault.clear_next_fingerprints(text[], bytea[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.clear_next_fingerprints(text[], bytea[], text) TO tokenvault_vault;
