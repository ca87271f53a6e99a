-- Transactions of analysts and the ETL older than a bound are ended by the operators' watchdog (attack 32, F2).
--
-- Every vault call meters its client with vault.take_call_budget (0019): an UPDATE of the client's one
-- (client, kind) row of vault.call_budget. A transaction of any login held open - idle (`BEGIN ISOLATION LEVEL
-- REPEATABLE READ; SELECT ...;` left in psql) or active (`SELECT pg_sleep(...)`: a statement's snapshot) - keeps
-- the database's xmin horizon, so no version of that row written since may be pruned or vacuumed and each next
-- UPDATE walks all of them under the row's lock: measured +34 ns per kept version per metering statement, 0.34 ms
-- -> 2.56 ms after 64,000 calls, growing without bound. idle_in_transaction_session_timeout is each session's own
-- to set; PostgreSQL 15 has no transaction_timeout (17+); nothing ended it.
--
-- watchdog.end_old_transactions(bound): ends every client session, in this database, whose transaction began more
-- than `bound` seconds ago (pg_stat_activity's xact_start, idle or active: a single statement's implicit
-- transaction too), of any login but a superuser (PostgreSQL lets no non-superuser end one), a member of
-- tokenvault_owner (the migrator), a member of tokenvault_vault (the serving role: its key jobs hold their
-- intent rows in a transaction for the job's length, and its own calls are bounded by its statement timeouts) and
-- the caller's own session. So: analysts' logins and the ETL's.
--
-- Why xact_start and not backend_xmin: the harm is the horizon a transaction holds (its snapshot, backend_xmin, or
-- its xid, backend_xid), but PostgreSQL says only which xid that is, not when it was taken, and its age in xids
-- is the whole cluster's write rate, not time. Every snapshot or xid a transaction holds was taken after its
-- xact_start, so no transaction younger than the bound holds a horizon older than the bound: the rule keeps the
-- horizon within bound + one look of now, whatever the isolation level. A READ COMMITTED transaction older than
-- the bound that holds no snapshot between its statements is ended as well (it holds its locks - a migration's
-- ACCESS EXCLUSIVE waits behind them, and every vault call behind that - and takes a new old-horizon snapshot at
-- its next statement): as PostgreSQL 17's transaction_timeout does. Whether it held a horizon is returned.
--
-- Returns one row per session ended or that the server refused to end - pid, login, the transaction's age in
-- seconds, whether idle (not running a statement), whether it held a horizon (backend_xmin or backend_xid),
-- ended - then one last row with pid NULL whose `seconds` is the age of the oldest transaction of a watched login
-- left (0 when none): the watchdog's gauge. Never the statement or the client's address. It reads no relation
-- (pg_stat_get_activity() only) and is PL/pgSQL, as 0048's. The owner's pg_read_all_stats and pg_signal_backend
-- come from migration 0042.
SET ROLE tokenvault_owner;

-- Dropped first: run again after migration 0060 (which adds a column to what it returns), CREATE OR REPLACE could
-- not change the row type; 0060 and 0061, run after it, restore theirs.
DROP FUNCTION IF EXISTS watchdog.end_old_transactions(double precision);
CREATE FUNCTION watchdog.end_old_transactions(bound double precision)
RETURNS TABLE (pid integer, login text, seconds double precision, idle boolean, held_horizon boolean, ended boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    here oid := (SELECT a.datid FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a);
    now_at timestamptz := pg_catalog.clock_timestamp();
    oldest double precision := 0;
    old record;
BEGIN
    IF bound IS NULL OR NOT (bound OPERATOR(pg_catalog.>) 0) THEN
        RAISE EXCEPTION 'end_old_transactions needs a bound > 0 (seconds)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR old IN
        SELECT a.pid, a.usesysid, a.state, a.backend_xmin, a.backend_xid,
               pg_catalog.date_part('epoch', now_at OPERATOR(pg_catalog.-) a.xact_start) AS age
        FROM pg_catalog.pg_stat_get_activity(NULL) a
        WHERE a.xact_start IS NOT NULL
          AND a.datid OPERATOR(pg_catalog.=) here
          AND a.usesysid IS NOT NULL
          AND a.backend_type OPERATOR(pg_catalog.=) 'client backend'
          AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
        ORDER BY a.xact_start, a.pid
    LOOP
        -- The migrator (a member of the owner), a superuser (a member of every role) and the serving role: never.
        CONTINUE WHEN pg_catalog.pg_has_role(old.usesysid, 'tokenvault_owner', 'MEMBER')
                   OR pg_catalog.pg_has_role(old.usesysid, 'tokenvault_vault', 'MEMBER');
        IF old.age OPERATOR(pg_catalog.<=) bound THEN
            oldest := GREATEST(oldest, old.age);
            CONTINUE;
        END IF;
        pid := old.pid;
        login := pg_catalog.pg_get_userbyid(old.usesysid)::text;
        seconds := old.age;
        idle := old.state IS DISTINCT FROM 'active';
        held_horizon := old.backend_xmin IS NOT NULL OR old.backend_xid IS NOT NULL;
        BEGIN
            ended := pg_catalog.pg_terminate_backend(old.pid);
        EXCEPTION WHEN insufficient_privilege THEN  -- the owner lacks pg_signal_backend
            ended := false;
        END;
        IF NOT ended THEN
            oldest := GREATEST(oldest, old.age);
        END IF;
        RETURN NEXT;
    END LOOP;
    pid := NULL;
    login := NULL;
    seconds := oldest;
    idle := NULL;
    held_horizon := NULL;
    ended := NULL;
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION watchdog.end_old_transactions(double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION watchdog.end_old_transactions(double precision) TO tokenvault_watchdog;

RESET ROLE;
