-- Erasure is metered in the database, and an erasure is done only with its audit row stored
-- (second insider round, 3 Dec).
--
-- 1. The erase limit ([defaults.limits] erase_per_second / erase_burst) was a token bucket in
-- each process's memory: one privacy-officer certificate got a full burst from every replica
-- (the HPA runs 2 to 12) and again from every restart. Erasure cannot be undone, so its bucket
-- is kept here, one row per client, taken under the row's lock by vault.take_erase_budget
-- before each erasure, on the database's clock. The limits stay in the policy file and are
-- passed in by the service. The serving role has no privilege on the table, only EXECUTE on
-- the function, which can only take (p_count >= 1) and refill at the rate passed in up to the
-- burst passed in: it cannot put tokens back or reset a row. (The serving role may call
-- vault.erase_tokens directly anyway; the bucket meters the API, i.e. a stolen certificate.)
--
-- 2. vault.erase_tokens wrote its audit row with a plain INSERT that nobody counted: a DO
-- INSTEAD NOTHING rule (or a BEFORE trigger returning NULL) on vault.audit_log let an erasure
-- through with no row. It now takes the row's id (INSERT ... RETURNING: a rule without
-- RETURNING makes the INSERT fail) and reads the row back by id, and raises - rolling the
-- erasure back - unless the row is there.
SET ROLE tokenvault_owner;

CREATE TABLE IF NOT EXISTS vault.erase_budget (
    client      text PRIMARY KEY,
    tokens      double precision NOT NULL CHECK (tokens >= 0),
    updated_at  timestamptz NOT NULL
);

CREATE OR REPLACE FUNCTION vault.take_erase_budget(
    p_client text, p_count integer, p_per_second double precision, p_burst integer
) RETURNS double precision
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    now_at timestamptz := clock_timestamp();
    level double precision;
    last_at timestamptz;
BEGIN
    IF p_client IS NULL OR p_count IS NULL OR p_count < 1 OR p_per_second IS NULL OR p_per_second <= 0
       OR p_burst IS NULL OR p_burst < 1 THEN
        RAISE EXCEPTION 'take_erase_budget needs a client, a count >= 1, a rate > 0 and a burst >= 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO vault.erase_budget (client, tokens, updated_at) VALUES (p_client, p_burst, now_at)
    ON CONFLICT (client) DO NOTHING;
    SELECT b.tokens, b.updated_at INTO level, last_at FROM vault.erase_budget b
    WHERE b.client = p_client FOR UPDATE;
    -- Refill since the last call (never for a clock that went back), up to the burst.
    level := least(p_burst::double precision,
                   level + greatest(0, extract(epoch FROM now_at - last_at)) * p_per_second);
    IF p_count <= level THEN
        UPDATE vault.erase_budget SET tokens = level - p_count, updated_at = greatest(now_at, last_at)
        WHERE client = p_client;
        RETURN 0;
    END IF;
    UPDATE vault.erase_budget SET tokens = level, updated_at = greatest(now_at, last_at) WHERE client = p_client;
    RETURN (p_count - level) / p_per_second;
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
            format('ok: %s erased, %s not erased', cardinality(erased), p_item_count - cardinality(erased)))
    RETURNING id INTO audit_id;
    IF audit_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM vault.audit_log a WHERE a.id = audit_id AND a.action = 'erase' AND a.client = p_client
    ) THEN
        RAISE EXCEPTION 'the erasure''s audit row was not stored in vault.audit_log; nothing was erased'
            USING ERRCODE = 'integrity_constraint_violation',
                  HINT = 'look for rules or triggers on vault.audit_log that drop or divert rows';
    END IF;
    RETURN QUERY SELECT unnest(erased);
END
$$;

RESET ROLE;

REVOKE ALL ON vault.erase_budget FROM PUBLIC, tokenvault_vault;
REVOKE ALL ON FUNCTION vault.take_erase_budget(text, integer, double precision, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.take_erase_budget(text, integer, double precision, integer) TO tokenvault_vault;
REVOKE ALL ON FUNCTION vault.erase_tokens(text[], integer, text, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.erase_tokens(text[], integer, text, text, text, text, text) TO tokenvault_vault;
