-- Every per-client limit is metered in the database, not only erasure (insider round 4, MED-1).
--
-- The Tokenize, new-token and Detokenize limits were token buckets in each process's memory:
-- one analyst certificate got 4000 values revealed within seconds against a burst of 2000 from
-- two replicas (the HPA runs 2 to 12), and a full burst again from every restart; so did the
-- ETL's new tokens. 0016 kept the erase bucket here; this generalizes it to one bucket per
-- (client, kind of limit), kind one of the policy's limits: tokenize, new_tokens, detokenize,
-- erase. 0016's erase buckets move in and vault.erase_budget goes.
--
-- vault.take_call_budget takes, under the row's lock and on the database's clock, at least
-- p_need items and up to p_want (as many as the bucket holds): a process takes a lease of
-- several items at once and spends it in memory, so the reveal hot path does not pay a round
-- trip per call. Whatever is spent was taken from this bucket first, so all replicas together
-- never spend more than burst + rate * t since the bucket started; in any window of t seconds
-- at most burst + rate * t + what processes held in leases at its start (a lease left over is
-- below the lease size; the service takes a twentieth of the burst at a time). A lease not spent
-- when its process stops is lost, never given back. Refused (p_need does not fit): nothing is
-- taken, and the seconds until it would fit are returned.
--
-- As in 0016, the serving role has no privilege on the table, only EXECUTE on the functions,
-- which only take (p_need >= 1) and refill at the rate passed in up to the burst passed in.
-- vault.take_erase_budget keeps its signature and meaning (a service of the previous release,
-- during a rolling upgrade, meters the same erase bucket as the new one).
SET ROLE tokenvault_owner;

CREATE TABLE IF NOT EXISTS vault.call_budget (
    client      text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('tokenize', 'new_tokens', 'detokenize', 'erase')),
    tokens      double precision NOT NULL CHECK (tokens >= 0),
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (client, kind)
);

-- 0016's erase buckets, as they stand (a re-run of 0016 by hand recreates its table empty; this drops it again).
DO $$
BEGIN
    IF to_regclass('vault.erase_budget') IS NOT NULL THEN
        INSERT INTO vault.call_budget (client, kind, tokens, updated_at)
        SELECT client, 'erase', tokens, updated_at FROM vault.erase_budget
        ON CONFLICT (client, kind) DO NOTHING;
        DROP TABLE vault.erase_budget;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION vault.take_call_budget(
    p_client text, p_kind text, p_need integer, p_want integer, p_per_second double precision, p_burst integer,
    OUT granted integer, OUT wait_seconds double precision
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    now_at timestamptz := clock_timestamp();
    level double precision;
    last_at timestamptz;
BEGIN
    IF p_client IS NULL OR p_kind IS NULL OR p_kind NOT IN ('tokenize', 'new_tokens', 'detokenize', 'erase')
       OR p_need IS NULL OR p_need < 1 OR p_want IS NULL OR p_want < p_need
       OR p_per_second IS NULL OR NOT (p_per_second > 0 AND p_per_second < 'Infinity'::double precision)
       OR p_burst IS NULL OR p_burst < 1 THEN
        RAISE EXCEPTION 'take_call_budget needs a client, a kind (tokenize, new_tokens, detokenize, erase),'
                        ' 1 <= need <= want, a finite rate > 0 and a burst >= 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO vault.call_budget (client, kind, tokens, updated_at) VALUES (p_client, p_kind, p_burst, now_at)
    ON CONFLICT (client, kind) DO NOTHING;
    SELECT b.tokens, b.updated_at INTO level, last_at FROM vault.call_budget b
    WHERE b.client = p_client AND b.kind = p_kind FOR UPDATE;
    -- Refill since the last call (never for a clock that went back), up to the burst.
    level := least(p_burst::double precision,
                   level + greatest(0, extract(epoch FROM now_at - last_at)) * p_per_second);
    IF p_need <= level THEN
        granted := least(p_want::double precision, floor(level))::integer;
        wait_seconds := 0;
    ELSE
        granted := 0;
        wait_seconds := (p_need - level) / p_per_second;
    END IF;
    UPDATE vault.call_budget SET tokens = level - granted, updated_at = greatest(now_at, last_at)
    WHERE client = p_client AND kind = p_kind;
END
$$;

CREATE OR REPLACE FUNCTION vault.take_erase_budget(
    p_client text, p_count integer, p_per_second double precision, p_burst integer
) RETURNS double precision
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT b.wait_seconds FROM vault.take_call_budget(p_client, 'erase', p_count, p_count, p_per_second, p_burst) AS b
$$;

RESET ROLE;

REVOKE ALL ON vault.call_budget FROM PUBLIC, tokenvault_vault;
REVOKE ALL ON FUNCTION vault.take_call_budget(text, text, integer, integer, double precision, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.take_call_budget(text, text, integer, integer, double precision, integer)
    TO tokenvault_vault;
REVOKE ALL ON FUNCTION vault.take_erase_budget(text, integer, double precision, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.take_erase_budget(text, integer, double precision, integer) TO tokenvault_vault;
