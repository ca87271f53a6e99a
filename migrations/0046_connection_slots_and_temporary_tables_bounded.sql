-- The serving role cannot take the connection slots the ETL and the analysts need; analysts create no
-- temporary tables (attack 29, F3 and F2).
--
-- F3: tokenvault_vault had no connection limit (the ETL's role has 40 since 0007, the analysts' logins
-- 10 each, set by whoever makes them): anyone with its password took every non-superuser slot in half a
-- second, and the ETL's and the analysts' logins were then refused ("too many clients"). The role now
-- gets what the server's slots leave once the other logins' own limits are counted:
-- max_connections - superuser_reserved_connections - the sum of every other non-superuser login's
-- CONNECTION LIMIT (the embedded stack: 100 - 3 - 40 - 10 = 47). A limit already set on the role
-- (an operator's, sized for replicas x pool) is kept; a share under 16 is not set (WARNING: raise
-- max_connections or lower the other limits, then set it by hand). A limit counts the sessions of
-- that login only: Vault-made logins IN ROLE tokenvault_vault (the Kubernetes deployment) each take
-- their CONNECTION LIMIT from Vault's creation statement (docs/production.md).
--
-- F2: each temporary table a transaction creates holds lock entries until it ends; an analyst's
-- session creating tables in a loop (CONNECTION LIMIT does not bound that) filled the server's
-- shared lock table in seconds and no new token was issued while it held. 0031 granted TEMPORARY to
-- tokenvault_analyst ("analysts may in their own sessions"); it is revoked (analysts read: a CTE or a
-- subquery does what a temporary table did). The ETL keeps it: its loads stage in one.
DO $$
DECLARE
    slots  integer := pg_catalog.current_setting('max_connections')::integer
                      - pg_catalog.current_setting('superuser_reserved_connections')::integer;
    others integer;
    share  integer;
BEGIN
    IF (SELECT r.rolconnlimit FROM pg_catalog.pg_roles r WHERE r.rolname = 'tokenvault_vault') <> -1 THEN
        RETURN;  -- set already (by this migration run before, or by an operator): kept
    END IF;
    SELECT coalesce(sum(r.rolconnlimit), 0) INTO others FROM pg_catalog.pg_roles r
    WHERE r.rolcanlogin AND NOT r.rolsuper AND r.rolconnlimit > 0 AND r.rolname <> 'tokenvault_vault';
    share := slots - others;
    IF share < 16 THEN
        RAISE WARNING 'tokenvault_vault gets no connection limit: the server''s % non-superuser slots leave it % once the other logins'' limits (%) are counted; raise max_connections or lower those, then ALTER ROLE tokenvault_vault CONNECTION LIMIT n',
            slots, share, others;
        RETURN;
    END IF;
    EXECUTE pg_catalog.format('ALTER ROLE tokenvault_vault CONNECTION LIMIT %s', share);
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'tokenvault_vault gets no connection limit: run this migration as a role that may alter it (CREATEROLE), or ALTER ROLE tokenvault_vault CONNECTION LIMIT n by hand';
END
$$;

DO $$
BEGIN
    EXECUTE pg_catalog.format('REVOKE TEMPORARY ON DATABASE %I FROM tokenvault_analyst', pg_catalog.current_database());
    IF has_database_privilege('tokenvault_analyst', pg_catalog.current_database(), 'TEMPORARY') THEN
        RAISE WARNING 'tokenvault_analyst may still create temporary tables: run this migration as the database''s owner (or REVOKE TEMPORARY ON DATABASE ... FROM PUBLIC, tokenvault_analyst so)';
    END IF;
END
$$;
