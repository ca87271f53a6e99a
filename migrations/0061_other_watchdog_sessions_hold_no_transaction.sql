-- Another session of the watchdog's own login in a transaction over 2 s is ended by the old-transaction rule
-- (attack 32, F10's remainder).
--
-- Since 0060 the NOTIFY rule keeps its state in one owner row (watchdog.notify_queue_watch), taken FOR UPDATE SKIP
-- LOCKED at each call: a call finding it locked ends nothing. So the watchdog's login (a stolen pod credential)
-- could `BEGIN; SELECT * FROM watchdog.end_notify_queue_holder();` and sit idle: the row stayed locked, the real
-- watchdog's looks ended nothing, and while an analyst's listener held the queue's tail and a notifier sent, the
-- queue grew until the old-transaction rule ended that session at its bound (300 s: at the 230 MB/s measured in
-- review 35, past PostgreSQL 15's 8 GB maximum - the data disk). The watchdog's own looks are single statements
-- in autocommit (milliseconds; 8-15 ms with the lock table full), so a session of a member of tokenvault_watchdog
-- other than the caller, in a transaction begun over 2 s ago, is now ended at the next look like any old
-- transaction (one WARNING line, counted). Everything else of 0060's function is unchanged. Re-runnable.
SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION watchdog.end_old_transactions(bound double precision)
RETURNS TABLE (pid integer, login text, seconds double precision, idle boolean, held_horizon boolean, ended boolean,
               in_force double precision)
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
    -- the caller may raise the bound, never lower it under the owner's floor
    in_force := GREATEST(bound, coalesce((SELECT b.max_transaction_floor_seconds FROM watchdog.rule_bounds b), 300));
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
        -- Another session of the watchdog's own login: its looks are single statements of milliseconds, so one in a
        -- transaction past OTHER_WATCHDOG_SECONDS is holding something (the NOTIFY rule's state row) on purpose.
        IF old.age OPERATOR(pg_catalog.<=) in_force
           AND NOT (pg_catalog.pg_has_role(old.usesysid, 'tokenvault_watchdog', 'MEMBER')
                    AND old.age OPERATOR(pg_catalog.>) 2) THEN
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
REVOKE ALL ON FUNCTION watchdog.end_old_transactions(double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION watchdog.end_old_transactions(double precision) TO tokenvault_watchdog;

RESET ROLE;
