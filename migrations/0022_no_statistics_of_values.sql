-- Erased values no longer survive in PostgreSQL's statistics (sixth insider round, 3 Dec, Break 3).
--
-- ANALYZE (autovacuum's too, once a tenth of a table changed) copies up to about 100 values of
-- each column into pg_statistic (histogram bounds, most common values), sealed values and
-- fingerprints of vault.tokens among them. pg_stats shows them to every role that may read the
-- column, the serving role included, and an erasure NULLs the row, not its statistics: with the
-- service's Vault identity an erased value was opened from pg_stats after its erasure.
--
-- 1. Statistics target 0 on every column that holds a sealed value, a fingerprint or key
--    material: ANALYZE skips these columns from now on. The planner has no use for them: they
--    are random bytes, compared only for equality through the hash indexes, which the planner
--    chooses without statistics (tests/integration/test_vault_at_scale.py). One lookup of
--    earlier releases relied on them: its check whether any row has a next fingerprint (a
--    fingerprint key rotation under way) took the null fraction of next_fingerprint from them,
--    and without it scans vault.tokens whole on every Tokenize. This release's service asks
--    through the index whatever the statistics say, and works before this migration too:
--    roll it out first, then migrate, on a large vault.
-- 2. A target of 0 does not remove what ANALYZE collected before: the rows stay in pg_statistic
--    for good (checked on PostgreSQL 15; 14's ANALYZE skips such a column in the same code,
--    leaving its old row). They are removed here:
--    - by a superuser migrator (the embedded stack's), deleted from pg_statistic;
--    - by any other (a managed database's owner role may not write pg_statistic), by altering
--      each such column to its own type, which drops the column's statistics. The table is not
--      rewritten and the hash constraints keep their indexes, but the partial indexes whose
--      predicate names the column (tokens_dek, tokens_fingerprint_key,
--      tokens_type_next_fingerprint) are rebuilt under an ACCESS EXCLUSIVE lock on vault.tokens:
--      about 1.3 s per million tokens (measured on PostgreSQL 15), during which no token is
--      issued or revealed. Run it at a quiet moment on a large vault. Triggers on such a column
--      are dropped and recreated as they were, in the same transaction.
--    Either way the migration then checks that no statistics of these columns are left.
-- 3. vault.erase_tokens refuses to erase (and erases nothing) while a column that erasure
--    clears may hold values in statistics: its target is not 0 again (an owner's ALTER ... SET
--    STATISTICS), statistics of it exist, or extended statistics cover it. The erased value would
--    otherwise stay readable there. Everything else is 0017's function unchanged.
--
-- What erasure still does not reach (base backups, WAL archives, the data key itself):
-- docs/threat-model.md, "What erasure reaches".

-- (2) as a superuser: the collected statistics go at once.
DO $$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        DELETE FROM pg_catalog.pg_statistic s
        USING (VALUES ('tokens', 'sealed'), ('tokens', 'fingerprint'), ('tokens', 'next_fingerprint'),
                      ('resealed_values', 'sealed'), ('data_keys', 'wrapped_key'),
                      ('replaced_wrapped_keys', 'wrapped_key')) AS v(relname, attname)
        JOIN pg_catalog.pg_class c ON c.relname = v.relname AND c.relnamespace = 'vault'::regnamespace
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = v.attname
        WHERE s.starelid = c.oid AND s.staattnum = a.attnum;
    END IF;
END
$$;

SET ROLE tokenvault_owner;

-- (1)
ALTER TABLE vault.tokens
    ALTER COLUMN sealed SET STATISTICS 0,
    ALTER COLUMN fingerprint SET STATISTICS 0,
    ALTER COLUMN next_fingerprint SET STATISTICS 0;
ALTER TABLE vault.resealed_values ALTER COLUMN sealed SET STATISTICS 0;
ALTER TABLE vault.data_keys ALTER COLUMN wrapped_key SET STATISTICS 0;
ALTER TABLE vault.replaced_wrapped_keys ALTER COLUMN wrapped_key SET STATISTICS 0;

-- (2) as the owner: whatever statistics are still there (pg_stats shows the owner all of them).
DO $$
DECLARE
    col record;
    trig record;
    kept_triggers text[];
    enabled_as text[];
BEGIN
    FOR col IN
        SELECT c.oid AS rel, a.attnum, format('vault.%I', c.relname) AS tbl, a.attname,
               pg_catalog.format_type(a.atttypid, a.atttypmod) AS typ
        FROM (VALUES ('tokens', 'sealed'), ('tokens', 'fingerprint'), ('tokens', 'next_fingerprint'),
                     ('resealed_values', 'sealed'), ('data_keys', 'wrapped_key'),
                     ('replaced_wrapped_keys', 'wrapped_key')) AS v(relname, attname)
        JOIN pg_catalog.pg_class c ON c.relname = v.relname AND c.relnamespace = 'vault'::regnamespace
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = v.attname
        WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_stats s
                      WHERE s.schemaname = 'vault' AND s.tablename = v.relname AND s.attname = v.attname)
    LOOP
        -- A trigger naming the column (UPDATE OF, WHEN) forbids altering its type: kept, dropped, recreated.
        kept_triggers := '{}';
        enabled_as := '{}';
        FOR trig IN
            SELECT DISTINCT t.oid, t.tgname, t.tgenabled, pg_catalog.pg_get_triggerdef(t.oid) AS def
            FROM pg_catalog.pg_trigger t
            JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_trigger'::regclass AND d.objid = t.oid
            WHERE t.tgrelid = col.rel AND NOT t.tgisinternal
              AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = col.rel
              AND d.refobjsubid = col.attnum
        LOOP
            kept_triggers := kept_triggers || trig.def;
            enabled_as := enabled_as || CASE trig.tgenabled
                WHEN 'D' THEN format('ALTER TABLE %s DISABLE TRIGGER %I', col.tbl, trig.tgname)
                WHEN 'R' THEN format('ALTER TABLE %s ENABLE REPLICA TRIGGER %I', col.tbl, trig.tgname)
                WHEN 'A' THEN format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', col.tbl, trig.tgname)
                ELSE NULL END;
            EXECUTE format('DROP TRIGGER %I ON %s', trig.tgname, col.tbl);
        END LOOP;
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s', col.tbl, col.attname, col.typ);
        FOR i IN 1 .. coalesce(array_length(kept_triggers, 1), 0) LOOP
            EXECUTE kept_triggers[i];
            IF enabled_as[i] IS NOT NULL THEN
                EXECUTE enabled_as[i];
            END IF;
        END LOOP;
    END LOOP;
END
$$;

-- (3) The columns whose values an erasure clears, and where statistics may still hold them.
CREATE OR REPLACE FUNCTION vault.erased_columns_in_statistics() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg(format('vault.%s.%s', v.relname, v.attname), ', ' ORDER BY v.relname, v.attname)
    FROM (VALUES ('tokens', 'sealed'), ('tokens', 'fingerprint'), ('tokens', 'next_fingerprint'),
                 ('resealed_values', 'sealed')) AS v(relname, attname)
    JOIN pg_class c ON c.relname = v.relname AND c.relnamespace = 'vault'::regnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = v.attname
    WHERE coalesce(a.attstattarget::integer, -1) <> 0  -- NULL (the default) from PostgreSQL 17 on
       OR EXISTS (SELECT 1 FROM pg_stats s
                  WHERE s.schemaname = 'vault' AND s.tablename = v.relname AND s.attname = v.attname)
       OR EXISTS (SELECT 1 FROM pg_statistic_ext x
                  WHERE x.stxrelid = c.oid AND (a.attnum = ANY (x.stxkeys::smallint[]) OR x.stxexprs IS NOT NULL))
$$;

DO $$
DECLARE
    left_over text := vault.erased_columns_in_statistics();
BEGIN
    IF left_over IS NOT NULL THEN
        RAISE EXCEPTION 'statistics may still hold values of %', left_over
            USING HINT = 'Drop extended statistics on these columns and run the migration again.';
    END IF;
END
$$;

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
    in_statistics text := vault.erased_columns_in_statistics();
BEGIN
    IF in_statistics IS NOT NULL THEN
        RAISE EXCEPTION 'erasure refused: statistics may keep the values of %; nothing was erased', in_statistics
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'ALTER TABLE ... ALTER COLUMN ... SET STATISTICS 0 on each, then remove what was'
                      ' collected as migration no_statistics_of_values does (or drop the extended statistics)';
    END IF;
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

REVOKE ALL ON FUNCTION vault.erased_columns_in_statistics() FROM PUBLIC;
REVOKE ALL ON FUNCTION vault.erase_tokens(text[], integer, text, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.erase_tokens(text[], integer, text, text, text, text, text) TO tokenvault_vault;
