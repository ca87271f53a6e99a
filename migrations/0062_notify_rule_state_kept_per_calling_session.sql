-- The NOTIFY rule keeps one state per calling session: no caller can lock, reset or forge another's (attack 33, A1).
--
-- Since 0060 watchdog.end_notify_queue_holder() kept its state (the anchor: when the queue passed its bound; the
-- lowest usage since the last end; the last end's time and count) in ONE owner row, watchdog.notify_queue_watch,
-- taken FOR UPDATE SKIP LOCKED: a call finding it locked ended nothing. The watchdog's login is an insider too (a
-- stolen pod credential): `BEGIN; SELECT * FROM watchdog.end_notify_queue_holder(); <1.9 s>; COMMIT`, back to
-- back, kept the row locked (0061 ends another watchdog-login session only in a transaction over 2 s), so the real
-- watchdog's looks ended nothing, silently, and the rule ran at the attacker's pace: measured, an analyst's listener
-- holding the tail ended 3.25 s after the crossing instead of 0.45 s, the queue's peak 101 MB instead of 21 MB.
--
-- Now the state is keyed by the calling session - (pid, backend_start) of pg_backend_pid(), which no caller chooses -
-- in watchdog.notify_queue_looks (the owner's; only this function writes it). A call locks its own row alone:
-- - another session of the watchdog's login can neither lock nor reset nor forge the real watchdog's state: its
--   anchor, low and times are the server's clock as that session's own looks saw them;
-- - a row not looked at for over 1 s is stale: the call starts over (a new anchor) - an anchor is never carried from
--   an old episode (the real watchdog looks every 0.25 s: a failed look or two cost at most one more look);
-- - rows of sessions that are gone (not looked at for 10 s and no live session with that pid and backend_start) are
--   deleted by any call, SKIP LOCKED (a call waits for nobody; a live caller's row is never another's to delete);
-- - if a call cannot take its own row (no path is known: kept as a guard) it ends nothing and returns wanted = NULL:
--   the watchdog logs it as an ERROR, once per episode, and counts it.
-- Unchanged (0056, 0060): the bound, the rise and the shortest time between ends in watchdog.rule_bounds; a caller
-- that LISTENs is refused; the candidates and their order.
-- What a session of the watchdog's login can still do: be one more watchdog (its login's CONNECTION LIMIT bounds how
-- many). Its calls end a session only while the queue is over the bound, 0.2 s after that session's own anchor and
-- its own last end, and (after an end) risen 8 pages above the lowest usage that session saw since: so on a queue
-- under the bound, or one not rising, nothing; in 0056's order (other logins' transactions first - its own
-- listeners too - then the ETL's, the vault's last and only those begun before that caller's own anchor). With n
-- sessions calling, up to n ends per 0.2 s while the queue rises (before: one per 0.2 s for all callers together).
-- watchdog.notify_queue_watch (0060's single row) is dropped. Re-runnable: IF NOT EXISTS / OR REPLACE / IF EXISTS.
SET ROLE tokenvault_owner;

CREATE TABLE IF NOT EXISTS watchdog.notify_queue_looks (
    pid integer NOT NULL,
    backend_start timestamptz NOT NULL,
    looked_at timestamptz NOT NULL,
    passed_at timestamptz,
    low_since_end double precision,
    ended_at timestamptz,
    ended_so_far integer NOT NULL DEFAULT 0,
    PRIMARY KEY (pid, backend_start)
);
REVOKE ALL ON TABLE watchdog.notify_queue_looks FROM PUBLIC;

CREATE OR REPLACE FUNCTION watchdog.end_notify_queue_holder()
RETURNS TABLE (usage double precision, bound double precision, at timestamptz, passed_at timestamptz,
               wanted boolean, pid integer, login text, ended boolean, ended_so_far integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rise double precision;
    spacing interval;
    me record;
    w record;
    holder record;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_listening_channels()) THEN
        RAISE EXCEPTION 'watchdog.end_notify_queue_holder() is not called from a session that LISTENs'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT b.notify_queue_bound, b.notify_queue_rise, pg_catalog.make_interval(secs => b.notify_queue_end_seconds)
    INTO bound, rise, spacing FROM watchdog.rule_bounds b;
    bound := coalesce(bound, 0.001);
    rise := coalesce(rise, 8.0 / 1048576);
    spacing := coalesce(spacing, interval '0.2 seconds');
    usage := pg_catalog.pg_notification_queue_usage();
    at := pg_catalog.clock_timestamp();
    wanted := false;
    ended_so_far := 0;
    -- the sessions list as of now, not as of the caller's transaction's first read of it
    PERFORM pg_catalog.pg_stat_clear_snapshot();
    DELETE FROM watchdog.notify_queue_looks g
    WHERE (g.pid, g.backend_start) IN (
        SELECT s.pid, s.backend_start FROM watchdog.notify_queue_looks s
        WHERE s.looked_at OPERATOR(pg_catalog.<) (at OPERATOR(pg_catalog.-) interval '10 seconds')
          AND NOT EXISTS (
              SELECT FROM pg_catalog.pg_stat_get_activity(s.pid) a
              WHERE a.backend_start OPERATOR(pg_catalog.=) s.backend_start)
        FOR UPDATE SKIP LOCKED);
    SELECT a.pid, a.backend_start INTO me FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a;
    INSERT INTO watchdog.notify_queue_looks AS s (pid, backend_start, looked_at)
    VALUES (me.pid, me.backend_start, at) ON CONFLICT DO NOTHING;
    SELECT s.looked_at, s.passed_at, s.low_since_end, s.ended_at, s.ended_so_far INTO w
    FROM watchdog.notify_queue_looks s
    WHERE s.pid OPERATOR(pg_catalog.=) me.pid AND s.backend_start OPERATOR(pg_catalog.=) me.backend_start
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN  -- its own row not taken (no known path): ends nothing, said by wanted = NULL
        wanted := NULL;
        RETURN NEXT;
        RETURN;
    END IF;
    -- stale (not looked at for over 1 s), or under the bound: start over
    IF w.looked_at OPERATOR(pg_catalog.<) (at OPERATOR(pg_catalog.-) interval '1 second')
       OR usage OPERATOR(pg_catalog.<=) bound THEN
        w.passed_at := NULL;
        w.low_since_end := NULL;
        w.ended_at := NULL;
        w.ended_so_far := 0;
    END IF;
    <<look>>
    BEGIN
        EXIT look WHEN usage OPERATOR(pg_catalog.<=) bound;
        IF w.passed_at IS NULL THEN  -- the first look over the bound: the anchor, on the server's clock
            w.passed_at := at;
            EXIT look;
        END IF;
        IF w.low_since_end IS NOT NULL THEN
            w.low_since_end := LEAST(w.low_since_end, usage);
        END IF;
        -- not risen since the last end, or too soon after the anchor or the last end: nothing
        EXIT look WHEN
            (usage OPERATOR(pg_catalog.<=)
             GREATEST(bound, coalesce(w.low_since_end OPERATOR(pg_catalog.+) rise, bound)))
            OR (at OPERATOR(pg_catalog.<)
                (GREATEST(w.passed_at, coalesce(w.ended_at, w.passed_at)) OPERATOR(pg_catalog.+) spacing));
        wanted := true;
        FOR holder IN
            SELECT c.pid, c.usesysid
            FROM (
                SELECT a.pid, a.usesysid, a.xact_start,
                       CASE
                           WHEN pg_catalog.pg_has_role(a.usesysid, 'tokenvault_vault', 'MEMBER') THEN 2
                           WHEN pg_catalog.pg_has_role(a.usesysid, 'tokenvault_etl', 'MEMBER') THEN 1
                           ELSE 0
                       END AS category
                FROM pg_catalog.pg_stat_get_activity(NULL) a
                WHERE a.xact_start IS NOT NULL
                  AND a.usesysid IS NOT NULL
                  AND a.backend_type OPERATOR(pg_catalog.=) 'client backend'
                  AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
            ) c
            -- other logins' and the ETL's at any age; the vault's only if older than this caller's anchor
            WHERE c.category OPERATOR(pg_catalog.<) 2 OR c.xact_start OPERATOR(pg_catalog.<) w.passed_at
            ORDER BY c.category, c.xact_start, c.pid
        LOOP
            -- The migrator (a member of the owner) and a superuser (a member of every role): never.
            CONTINUE WHEN pg_catalog.pg_has_role(holder.usesysid, 'tokenvault_owner', 'MEMBER');
            pid := holder.pid;
            login := pg_catalog.pg_get_userbyid(holder.usesysid)::text;
            BEGIN
                ended := pg_catalog.pg_terminate_backend(holder.pid);
            EXCEPTION WHEN insufficient_privilege THEN  -- the owner lacks pg_signal_backend
                ended := false;
            END;
            w.ended_so_far := w.ended_so_far OPERATOR(pg_catalog.+) 1;
            w.low_since_end := usage;
            w.ended_at := at;
            RAISE LOG 'watchdog.end_notify_queue_holder: login % ended pid % (%), the NOTIFY queue at % of its maximum',
                session_user, holder.pid, login, usage;
            EXIT;
        END LOOP;
    END;
    UPDATE watchdog.notify_queue_looks s
    SET looked_at = at, passed_at = w.passed_at, low_since_end = w.low_since_end, ended_at = w.ended_at,
        ended_so_far = w.ended_so_far
    WHERE s.pid OPERATOR(pg_catalog.=) me.pid AND s.backend_start OPERATOR(pg_catalog.=) me.backend_start;
    passed_at := w.passed_at;
    ended_so_far := w.ended_so_far;
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION watchdog.end_notify_queue_holder() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION watchdog.end_notify_queue_holder() TO tokenvault_watchdog;

DROP TABLE IF EXISTS watchdog.notify_queue_watch;

RESET ROLE;
