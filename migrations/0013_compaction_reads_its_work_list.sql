-- Fingerprint compaction reads its work list from the index that holds it (issue 18, review).
--
-- compact_fingerprints (0011) found each batch with `next_fingerprint IS NOT NULL AND
-- fingerprint_key_id <> key ... LIMIT n`: no index answers "<> key", so every batch scanned
-- vault.tokens from its first page, passing again over the rows compacted before it, and the
-- last call of a compaction (the one that finds nothing) read the whole table: 26 ms at 300k
-- rows, about a second of a core at 10M. The rows still to compact are exactly those of the
-- partial unique index tokens_type_next_fingerprint (0004, `WHERE next_fingerprint IS NOT
-- NULL`); ordered by its key, the batch is read from that index and ends after n entries
-- (0.02 ms when nothing is left). The body is otherwise unchanged.

SET ROLE tokenvault_owner;

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

RESET ROLE;
