-- No role of the vault can plant a function, operator or type that someone else's query or an
-- audit trigger would run (fourth insider round, MED-2, 3 Dec).
--
-- PostgreSQL 14 and older grant CREATE on schema public to PUBLIC. There the ETL planted an `=`
-- operator for varchar that an analyst's `WHERE masked_ip = 'ip_...'` ran with the analyst's
-- rights (copying token columns into a table the ETL reads), and the serving role planted a
-- clock_timestamp() first on its own search_path: the audit chain trigger, running with the
-- caller's search_path, dated rows at will (one in 2099 made every genuine append fail).
--
-- 1. CREATE on public is revoked from PUBLIC (PostgreSQL 15's default already; harmless there).
--    The migrator must own schema public or be a superuser (on PostgreSQL 14 its owner is the
--    bootstrap superuser): the check below refuses to go on while a role of the vault may still
--    create in public, rather than leave it silently open.
-- 2. Every trigger function gets `search_path = pg_catalog, pg_temp`, as the SECURITY DEFINER
--    functions have had since 0007: pg_catalog first, the session's temporary schema last.
--    audit_log_chain is a per-row trigger on audit rows (one per call, not per token); the
--    others are statement-level or on rare tables.
-- 3. The SQL helpers the chain trigger inlines (0008) get no SET clause - a SQL function with
--    one is never inlined - but name every function, operator and type they use by schema, so
--    they mean the same from any caller's search_path. Same bytes, same hashes.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

DO $$
DECLARE
    open_to text;
BEGIN
    SELECT string_agg(r, ', ') INTO open_to
    FROM unnest(ARRAY['public', 'tokenvault_vault', 'tokenvault_etl', 'tokenvault_analyst']) AS r
    WHERE has_schema_privilege(r, 'public', 'CREATE');
    IF open_to IS NOT NULL THEN
        RAISE EXCEPTION 'schema public is still CREATE-able by %', open_to
            USING HINT = 'Run the migrations as the owner of schema public or a superuser, or run'
                ' REVOKE CREATE ON SCHEMA public FROM PUBLIC (and from those roles) as such first.';
    END IF;
END
$$;

SET ROLE tokenvault_owner;

ALTER FUNCTION vault.audit_log_chain() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION vault.audit_log_append_only() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION vault.audit_checkpoint_matches() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION vault.audit_tokens_issued() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION vault.audit_data_keys_changed() SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION vault.audit_field(t text) RETURNS bytea
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.int4send(pg_catalog.octet_length(pg_catalog.convert_to(t, 'UTF8')))
        OPERATOR(pg_catalog.||) pg_catalog.convert_to(t, 'UTF8')
$$;

CREATE OR REPLACE FUNCTION vault.audit_row_hash(
    prev_hash bytea, id bigint, at timestamptz, client text, client_serial text, client_cert_sha256 text,
    action text, purpose text, token_types text, item_count integer, outcome text, revealed bytea[]
) RETURNS bytea
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.sha256(
        prev_hash
        OPERATOR(pg_catalog.||) vault.audit_field(id::pg_catalog.text)
        OPERATOR(pg_catalog.||) vault.audit_field(
            pg_catalog.to_char(pg_catalog.timezone('UTC', at), 'YYYY-MM-DD"T"HH24:MI:SS.US'))
        OPERATOR(pg_catalog.||) vault.audit_field(client)
        OPERATOR(pg_catalog.||) vault.audit_field(client_serial)
        OPERATOR(pg_catalog.||) vault.audit_field(client_cert_sha256)
        OPERATOR(pg_catalog.||) vault.audit_field(action)
        OPERATOR(pg_catalog.||) vault.audit_field(purpose)
        OPERATOR(pg_catalog.||) vault.audit_field(token_types)
        OPERATOR(pg_catalog.||) vault.audit_field(item_count::pg_catalog.text)
        OPERATOR(pg_catalog.||) vault.audit_field(outcome)
        OPERATOR(pg_catalog.||) pg_catalog.sha256(coalesce(pg_catalog.array_send(revealed), ''::pg_catalog.bytea))
    )
$$;

-- NULLIF would look its `=` up on the caller's search_path: the same text, spelled with CASE.
CREATE OR REPLACE FUNCTION vault.audit_session() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT session_user::pg_catalog.text OPERATOR(pg_catalog.||) CASE
        WHEN pg_catalog.current_setting('application_name', true) OPERATOR(pg_catalog.<>) ''
        THEN ' (' OPERATOR(pg_catalog.||) pg_catalog.current_setting('application_name', true) OPERATOR(pg_catalog.||) ')'
        ELSE ''
    END
$$;

RESET ROLE;
