-- An erasure that erased nothing gives its budget back (chaos 50, V50-4).
--
-- The privacy officer's erasures are metered (vault.take_call_budget, 0019: 100 tokens, then one every 200 s)
-- before the erasure runs. An erasure the database then refused - a token row held by a key job's batch past its
-- 2 s wait, a statement timeout, the database restarting - erased nothing ("retry later"), and its budget was spent
-- all the same: the officer's retry of 100 tokens was refused for 5.5 hours, and each retry that failed again spent
-- more. The vault now calls this for an erasure whose transaction it knows did not commit.
--
-- It only adds to the erase bucket of a client that has one, up to the burst passed in, as take_call_budget refills
-- it up to the burst passed in. The serving role (EXECUTE only, as for take_call_budget) could thus fill its officer's
-- erase budget again at will; it can erase by vault.erase_tokens anyway, which takes no budget: the budget bounds a
-- stolen erase certificate used through the vault, and that certificate reaches no function of the database.
SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION vault.give_back_erase_budget(p_client text, p_count integer, p_burst integer)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_client IS NULL OR p_count IS NULL OR p_count < 1 OR p_burst IS NULL OR p_burst < 1 THEN
        RAISE EXCEPTION 'give_back_erase_budget needs a client, a count >= 1 and a burst >= 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE vault.call_budget SET tokens = least(p_burst::double precision, tokens + p_count)
    WHERE client = p_client AND kind = 'erase';
END
$$;

RESET ROLE;

REVOKE ALL ON FUNCTION vault.give_back_erase_budget(text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.give_back_erase_budget(text, integer, integer) TO tokenvault_vault;
