-- A mark of erasures that moves with every erasure's commit (attack report, finding 5).
--
-- Replicas learned of erasures on other replicas from max(erased_at). erase_tokens sets
-- erased_at to now(), its transaction's start: an erasure held up (by a key job's row lock, for
-- instance) commits after a later-started one, and its time lies behind the mark already seen,
-- which therefore never moves. A replica that cached the value again between the two commits
-- kept handing out the erased token for it.
--
-- vault.erasure_count counts the statements that erased values. A statement trigger adds one
-- in the erasing transaction itself, so the new count becomes visible exactly when that
-- erasure commits, whatever the order in which erasures started; a count only grows, so no
-- commit can land "behind" it. Erasing transactions queue on its one row until they commit
-- (erasures are rare, and they already take turns on the audit chain's lock right after).
-- The key maintainer reads this one row every check interval, at any size of the vault.
--
-- The trigger fires for any UPDATE that sets erased_at (only vault.erase_tokens does: the
-- serving role has no UPDATE on vault.tokens since 0006), also when it matched no row: an
-- extra cache clear, never a missed one. It runs as erase_tokens' owner. The serving role may
-- only read the count.
SET ROLE tokenvault_owner;

CREATE TABLE IF NOT EXISTS vault.erasure_count (
    one_row   boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    erasures  bigint NOT NULL DEFAULT 0
);
INSERT INTO vault.erasure_count (erasures)
SELECT count(*) FROM vault.tokens WHERE erased_at IS NOT NULL  -- the partial index of 0010
ON CONFLICT (one_row) DO NOTHING;

CREATE OR REPLACE FUNCTION vault.count_erasure() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- An upsert: a missing row is made again rather than the erasure going uncounted.
    INSERT INTO vault.erasure_count AS c (one_row, erasures) VALUES (true, 1)
    ON CONFLICT (one_row) DO UPDATE SET erasures = c.erasures + 1;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS tokens_erasure_counted ON vault.tokens;
CREATE TRIGGER tokens_erasure_counted AFTER UPDATE OF erased_at ON vault.tokens
    FOR EACH STATEMENT EXECUTE FUNCTION vault.count_erasure();

RESET ROLE;

REVOKE ALL ON FUNCTION vault.count_erasure() FROM PUBLIC;
REVOKE ALL ON vault.erasure_count FROM PUBLIC;
GRANT SELECT ON vault.erasure_count TO tokenvault_vault;
