-- Sessions of the serving role that hold a large share of the shared lock table are ended (attack 29, F1).
--
-- PostgreSQL's heavyweight lock table is shared by every session of the cluster and has a fixed size
-- (max_locks_per_transaction x (max_connections + max_prepared_transactions), about twice that in
-- entries). A subtransaction that writes holds an ExclusiveLock on its XID there until it is released,
-- and nothing bounds the savepoints a transaction keeps open: one session of the serving role sending
-- `SAVEPOINT a; SELECT vault.take_call_budget('<made-up client>', ...)` 12,500 times filled the table in
-- 1.5-2 s. Every vault call then failed (its XID lock could not be taken; a new connection got
-- `FATAL: out of shared memory`), for as long as the session held it: nothing ended it.
--
-- vault.end_lock_hogs(spare): ends every session, in this database, of a login that is a member of
-- tokenvault_vault (the caller's own session never; a superuser's never: PostgreSQL refuses to let a
-- non-superuser end it, and the refusal is caught) that holds more than 256 entries of the lock table,
-- but the sessions whose pid is in `spare` (the calling vault process's own). The vault's busiest
-- session holds 22 (measured, attack 29) to a few dozen (a key job; tests/integration/test_lock_hogs_ended.py).
-- Returns one row per such session: pid, entries held, whether it was ended. Never the statement,
-- the login's name or its address. EXECUTE for tokenvault_vault only (each of its logins): a login of
-- the serving role may not end the ETL's, an analyst's or the owner's sessions through it, nor a member
-- session that holds 256 entries or fewer.
--
-- It must work while the table is full: every lock the statement itself needed would then fail. So it
-- reads no relation at all - pg_lock_status() (the function under the pg_locks view: the view is a
-- relation to lock) and pg_stat_get_activity() (under pg_stat_activity) only - and is PL/pgSQL, whose
-- plans stay cached in the session: the lock watch calls it every 0.25 s on a connection of its own,
-- opened at start, so planning and the role lookups (pg_authid, pg_auth_members: shared catalogs,
-- whose locks never take the fast path) are done, and cached, before any fill. Each round also looks up
-- the membership of every session of the database (not only the hogs), so a login that connects and then
-- fills the table is already known. Measured on a full table: tests/integration/test_lock_hogs_ended.py.
-- The owner's pg_read_all_stats and pg_signal_backend come from migration 0042.
SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION vault.end_lock_hogs(spare integer[])
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
          AND h.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
          AND NOT h.pid OPERATOR(pg_catalog.=) ANY(COALESCE(spare, '{}'))
    LOOP
        pid := hog.pid;
        locks := hog.locks;
        BEGIN
            CONTINUE WHEN NOT pg_catalog.pg_has_role(hog.usesysid, 'tokenvault_vault', 'MEMBER');
            ended := pg_catalog.pg_terminate_backend(hog.pid);
        EXCEPTION WHEN insufficient_privilege THEN  -- a superuser's session: not ours to end
            ended := false;
        END;
        RETURN NEXT;
    END LOOP;
    -- Every session's role, looked up now: cached for a round that finds the table full.
    BEGIN
        PERFORM pg_catalog.count(*) FROM pg_catalog.pg_stat_get_activity(NULL) a
        WHERE a.datid OPERATOR(pg_catalog.=) here AND a.usesysid IS NOT NULL
          AND pg_catalog.pg_has_role(a.usesysid, 'tokenvault_vault', 'MEMBER');
    EXCEPTION WHEN OTHERS THEN
        NULL;  -- a full table: the hogs above were looked at all the same
    END;
END
$$;

REVOKE ALL ON FUNCTION vault.end_lock_hogs(integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.end_lock_hogs(integer[]) TO tokenvault_vault;

RESET ROLE;
