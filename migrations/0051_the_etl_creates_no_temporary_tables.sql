-- No login of the vault's creates temporary tables: the ETL's TEMPORARY is revoked (review 34, R34-1).
--
-- 0031 revoked TEMPORARY on the database from PUBLIC and granted it back to tokenvault_etl (its redelivered
-- batches staged in a temporary table) and to analysts; 0046 took the analysts' away. The ETL's login was the
-- last with it, and over many small transactions (each far under the watchdog's 256 entries) it could stage a
-- temporary inheritance tree of thousands of tables, then fill PostgreSQL's shared lock table with one
-- statement, `BEGIN; LOCK TABLE <parent> IN ACCESS EXCLUSIVE MODE`, in 0.06-0.14 s - before the watchdog's
-- next look (every 0.25 s, 0048) - and every look after that failed `out of shared memory` (strong locks leave
-- the fast path): the hog was never ended, every vault call failed, new logins were refused (7 of 7 runs at
-- max_locks_per_transaction 64; 2 of 3 at the shipped 512 with 8 sessions). The ETL's redelivery path now
-- merges with one `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING` (etl_service/adapters/postgres.py)
-- and needs no temporary table. Revoked from tokenvault_etl, and from PUBLIC again (0031 did, when run by the
-- database's owner; a migrator that was not left it). Only the database's owner (or a superuser) may revoke
-- it: otherwise a WARNING says so. A database created later from a template gets PUBLIC's TEMPORARY again:
-- migrate it as its owner. Re-runnable.
DO $$
BEGIN
    EXECUTE pg_catalog.format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC, tokenvault_etl',
                              pg_catalog.current_database());
    IF pg_catalog.has_database_privilege('tokenvault_etl', pg_catalog.current_database(), 'TEMPORARY') THEN
        RAISE WARNING 'tokenvault_etl may still create temporary tables in database %, and so fill the server''s lock table faster than the lock watchdog looks (review 34, R34-1)',
            pg_catalog.current_database()
            USING HINT = 'As the database''s owner (or a superuser): REVOKE TEMPORARY ON DATABASE ... FROM PUBLIC, tokenvault_etl'
                ' (and from any role tokenvault_etl is a member of).';
    END IF;
END
$$;
