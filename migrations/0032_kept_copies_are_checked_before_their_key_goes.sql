-- The key jobs read the kept copies of re-sealed values to check them (review 25, R25-1).
--
-- 0020 keeps the value a re-seal replaces in vault.resealed_values, under its old data key, so
-- that garbage the serving role re-sealed during a rotation can be put back by the owner. The
-- routine cycle then destroyed that copy: `reencrypt` retired the old key (no live row under it)
-- and `retire-kek-versions` let the KEK version wrapping it go; after the operators' trim the
-- garbage was all that was left, `audit verify` intact. The database cannot open a sealed value;
-- the key jobs can. Before `reencrypt` retires a data key, and before `retire-kek-versions`
-- condemns the KEK version of a retired one, they open each kept copy under that key and the
-- value now stored for its token, and refuse when one differs (vault_service/service/kept_copies.py).
--
-- vault.kept_copies returns, a batch at a time in the order they were kept, the kept copies under
-- one data key of tokens that still hold a value, with that value and its key. The serving role
-- reads it; it still cannot read, change or delete vault.resealed_values itself. What it reads is
-- what vault.tokens held for those same tokens (a token's value never changes; an erasure deletes
-- its kept copies), sealed under keys the service holds anyway.
SET ROLE tokenvault_owner;

CREATE INDEX IF NOT EXISTS resealed_values_dek ON vault.resealed_values (dek_id, id);

CREATE OR REPLACE FUNCTION vault.kept_copies(p_dek_id integer, p_after_id bigint, p_limit integer)
RETURNS TABLE (kept_id bigint, token text, token_type text, kept bytea, dek_id integer, sealed bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.id, r.token, t.token_type, r.sealed, t.dek_id, t.sealed
    FROM vault.resealed_values r
    CROSS JOIN LATERAL (SELECT x.token_type, x.dek_id, x.sealed FROM vault.tokens x
                        WHERE x.token = r.token LIMIT 1) AS t  -- a probe per token
    WHERE r.dek_id = p_dek_id AND r.id > p_after_id AND t.sealed IS NOT NULL
    ORDER BY r.dek_id, r.id
    LIMIT least(greatest(p_limit, 0), 10000)
$$;

RESET ROLE;

REVOKE ALL ON FUNCTION vault.kept_copies(integer, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.kept_copies(integer, bigint, integer) TO tokenvault_vault;
