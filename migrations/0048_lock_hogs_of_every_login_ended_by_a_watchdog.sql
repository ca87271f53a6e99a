-- Sessions of any login filling PostgreSQL's shared lock table are ended by an operators' watchdog (attack 29, F1/F2).
--
-- Migration 0047 ends sessions of the serving role holding more than 256 lock-table entries; the ETL's login
-- could still fill the table (`SAVEPOINT a; INSERT INTO public.etl_quarantine ...` thousands of times in one
-- transaction: one XID lock per subtransaction that wrote; or `CREATE TEMP TABLE` in a loop), and every vault
-- call then failed. The vault's login must not end the ETL's or analysts' sessions (docs/threat-model.md), so
-- the same rule runs as a login of the operators' own: a member of tokenvault_watchdog, in a process of its
-- own (python -m vault_service.entrypoints.lock_watchdog).
--
-- tokenvault_watchdog: NOLOGIN group role, no privilege on any table, schema or function but USAGE on schema
-- watchdog and EXECUTE on watchdog.end_lock_hogs(); no TEMPORARY (PUBLIC has none since 0031). Its logins are
-- made by whoever deploys (the embedded stack, compose's migrate, Vault's database engine), IN ROLE
-- tokenvault_watchdog, with a small CONNECTION LIMIT.
--
-- watchdog.end_lock_hogs(): ends every client session, in this database, holding more than 256 entries of the
-- lock table, of any login but a superuser (PostgreSQL lets no non-superuser end one), a member of
-- tokenvault_owner (the migrator: a migration legitimately takes many locks) and the caller's own session.
-- The serving role's sessions are covered too (defence in depth: the vault keeps its own rule, 0047). The
-- busiest legitimate sessions hold a few dozen entries (the vault's: 33-35; the ETL's batch load: measured in
-- tests/integration/test_lock_watchdog.py). Returns one row per session ended or that the server refused to
-- end: pid, entries held, ended. Never the statement, the login's name or its address. It reads no relation
-- (pg_lock_status(), pg_stat_get_activity() only) and is PL/pgSQL, its plans and role lookups cached by every
-- call, so it runs on the watchdog's warm connection while the table is full (as 0047's; measured there).
-- The owner's pg_read_all_stats and pg_signal_backend come from migration 0042.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tokenvault_watchdog') THEN
        CREATE ROLE tokenvault_watchdog NOLOGIN;
    END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS watchdog AUTHORIZATION tokenvault_owner;
REVOKE ALL ON SCHEMA watchdog FROM PUBLIC;
GRANT USAGE ON SCHEMA watchdog TO tokenvault_watchdog;

SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION watchdog.end_lock_hogs()
RETURNS TABLE (pid integer, locks bigint, ended boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    here oid := (SELECT a.datid FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a);
    hog record;
BEGIN
    FOR hog IN
        SELECT h.pid, h.locks, a.usesysid
        FROM (SELECT l.pid, pg_catalog.count(*) AS locks FROM pg_catalog.pg_lock_status() l
              WHERE l.pid IS NOT NULL GROUP BY l.pid) h
        JOIN pg_catalog.pg_stat_get_activity(NULL) a ON a.pid OPERATOR(pg_catalog.=) h.pid
        WHERE h.locks OPERATOR(pg_catalog.>) 256
          AND a.datid OPERATOR(pg_catalog.=) here
          AND a.usesysid IS NOT NULL
          AND a.backend_type OPERATOR(pg_catalog.=) 'client backend'
          AND h.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
    LOOP
        pid := hog.pid;
        locks := hog.locks;
        BEGIN
            -- The migrator (a member of the owner) and a superuser (a member of every role): never.
            CONTINUE WHEN pg_catalog.pg_has_role(hog.usesysid, 'tokenvault_owner', 'MEMBER');
            ended := pg_catalog.pg_terminate_backend(hog.pid);
        EXCEPTION WHEN insufficient_privilege THEN  -- the owner lacks pg_signal_backend, or a superuser's
            ended := false;
        END;
        RETURN NEXT;
    END LOOP;
    -- Every session's role, looked up now: cached for a call that finds the table full.
    BEGIN
        PERFORM pg_catalog.count(*) FROM pg_catalog.pg_stat_get_activity(NULL) a
        WHERE a.datid OPERATOR(pg_catalog.=) here AND a.usesysid IS NOT NULL
          AND pg_catalog.pg_has_role(a.usesysid, 'tokenvault_owner', 'MEMBER');
    EXCEPTION WHEN OTHERS THEN
        NULL;  -- a full table: the hogs above were looked at all the same
    END;
END
$$;

REVOKE ALL ON FUNCTION watchdog.end_lock_hogs() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION watchdog.end_lock_hogs() TO tokenvault_watchdog;

RESET ROLE;
