-- The vault's logins cannot reach the cluster's other databases, and nobody but a superuser writes large
-- objects in the vault's (attack 30, F1 and F5).
--
-- F1: PostgreSQL's lock table is one per cluster, but 0045's advisory-function revocations, 0046's TEMPORARY
-- revocation and the lock watch (0047: sessions in the vault's database only) are per database. Every login
-- had CONNECT on `postgres` and `template1` (PUBLIC's, as initdb leaves it), where PUBLIC still runs every
-- advisory function and creates temporary tables: the serving role, the ETL's and an analyst's login each
-- filled the table from `postgres` in about a second with session-level advisory locks, then sat idle -
-- every vault call failed (8 of 8 over 6 s), nothing ended the session. PUBLIC's CONNECT on those two is
-- revoked here: the vault, the ETL and analysts work in their own database only (superusers are not bound by
-- CONNECT; a database created later grants PUBLIC CONNECT again: create it with `REVOKE CONNECT ... FROM
-- PUBLIC`, docs/production.md). The database being migrated is left alone (the exercise's stack migrates
-- `postgres` itself). Only a superuser, or those databases' owner, may revoke it: otherwise a WARNING says so
-- (a managed PostgreSQL: its administrator revokes it).
--
-- F5: the large-object functions are PUBLIC's: a "read-only" analyst's nested `SAVEPOINT; SELECT lo_create(0)`
-- filled the lock table in ~10 s, `SELECT count(lo_unlink(lo_create(0))) FROM generate_series(1, 10000)` held
-- 20,004 entries after one statement, and `lo_from_bytea` committed data of its choosing into the vault's
-- database. Nothing of the vault, the ETL or the analysts' reads uses large objects: every large-object
-- function of pg_catalog is revoked from PUBLIC in this database (lo_import/lo_export are a superuser's
-- already).
DO $$
DECLARE
    other name;
BEGIN
    FOR other IN
        SELECT d.datname FROM pg_catalog.pg_database d
        WHERE d.datname IN ('postgres', 'template1') AND d.datname <> pg_catalog.current_database()
    LOOP
        EXECUTE pg_catalog.format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', other);
        IF pg_catalog.has_database_privilege('public', other, 'CONNECT') THEN
            RAISE WARNING 'every login may still connect to database %: run this migration as a superuser, or REVOKE CONNECT ON DATABASE % FROM PUBLIC as its owner', other, other;
        END IF;
    END LOOP;
END
$$;

DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pg_catalog' AND (p.proname LIKE 'lo\_%' OR p.proname IN ('loread', 'lowrite'))
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
        IF pg_catalog.has_function_privilege('public', fn, 'EXECUTE') THEN
            RAISE WARNING 'every role may still execute %: run this migration as a superuser (or revoke it so)', fn;
        END IF;
    END LOOP;
END
$$;
