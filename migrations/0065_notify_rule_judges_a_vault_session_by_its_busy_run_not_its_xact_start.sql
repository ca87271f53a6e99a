-- The NOTIFY rule judges a vault session by how long it has been seen busy (never 'idle'), not by its xact_start
-- alone (attack 36, L1).
--
-- 0063/0064 made a vault transaction (a member login of tokenvault_vault) a candidate only once it began before the
-- caller's previous look and 0.2 s ago. A backend reads its notifications (and so moves its queue position) only
-- when it is idle outside a transaction. Pod A's member login kept a listener that sends `COMMIT; BEGIN; SELECT 1` as
-- ONE simple-query message every ~20 ms: never idle outside a transaction, so it held the queue's tail, while its
-- xact_start was never over ~20 ms old - never a candidate: the queue reached the tester's cap (96 MB) in 2.4-2.7 s
-- and nothing was ended (4 of 4 runs).
--
-- Now each calling watchdog session (keyed as 0062's state: its pid and backend_start) keeps, in
-- watchdog.notify_queue_busy, per vault session (pid, backend_start) seen not 'idle' (in a transaction: running or
-- idle in it) at each of its looks since it was last seen idle, the first such look ("busy since"). A look that sees
-- the session idle or gone, or a look more than 1 s after the caller's previous one, starts it over. The rows are
-- the caller's currently busy vault sessions only (rewritten at each look; at most one per connection) and go with
-- the caller's state row (ON DELETE CASCADE: 0062's clean-up of callers gone).
-- In the vault's category a session is "held since" the earlier of its xact_start and its busy-since, and is a
-- candidate once held since before the caller's previous look and 0.2 s ago (0063's window, unchanged): so the
-- renewing listener is a candidate once it has been seen busy at every look for 0.2 s and across two looks.
-- Order in the vault's category (the other categories, the window and the spacing are 0063's, unchanged):
-- key-lock holders last (0064's spare to notify_queue_spared_until, unchanged); before them the non-waiters: first
-- those whose transaction is itself old enough, youngest first (0063), then those a candidate only by their busy run
-- (a transaction renewed without going idle), the longest run first; then the lock waiters, the longest held first
-- (0064). A pool connection of the vault goes idle between requests (an ordinary request lasts milliseconds; 'idle in
-- transaction' between the statements of a multi-statement request counts as busy, for milliseconds): under heavy
-- load one serving requests back to back may be seen busy at several looks in a row, but its run is shorter than a
-- listener's that has held the tail since before the queue grew, and it comes after every vault session whose own
-- transaction is old - so an idle-in-transaction listener is still ended before it, as before.
-- What a member login of tokenvault_vault can still do: as 0063/0064 say, its listener (renewing or idle in its
-- transaction) is ended after its own and pod B's older-than-a-look transactions in flight (decoys bounded by its
-- CONNECTION LIMIT); a renewing listener also after sessions seen busy longer than it.
-- Re-runnable: IF NOT EXISTS / CREATE OR REPLACE.
SET ROLE tokenvault_owner;

CREATE TABLE IF NOT EXISTS watchdog.notify_queue_busy (
    caller_pid integer NOT NULL,
    caller_backend_start timestamptz NOT NULL,
    pid integer NOT NULL,
    backend_start timestamptz NOT NULL,
    busy_since timestamptz NOT NULL,
    seen_at timestamptz NOT NULL,
    CONSTRAINT notify_queue_busy_pkey PRIMARY KEY (caller_pid, caller_backend_start, pid, backend_start),
    FOREIGN KEY (caller_pid, caller_backend_start) REFERENCES watchdog.notify_queue_looks (pid, backend_start)
        ON DELETE CASCADE
);
REVOKE ALL ON TABLE watchdog.notify_queue_busy FROM PUBLIC;

CREATE OR REPLACE FUNCTION watchdog.end_notify_queue_holder()
RETURNS TABLE (usage double precision, bound double precision, at timestamptz, passed_at timestamptz,
               wanted boolean, pid integer, login text, ended boolean, ended_so_far integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rise double precision;
    spacing interval;
    spared_until double precision;
    here oid;
    vault_since timestamptz;
    me record;
    w record;
    holder record;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_listening_channels()) THEN
        RAISE EXCEPTION 'watchdog.end_notify_queue_holder() is not called from a session that LISTENs'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT b.notify_queue_bound, b.notify_queue_rise, pg_catalog.make_interval(secs => b.notify_queue_end_seconds),
           b.notify_queue_spared_until
    INTO bound, rise, spacing, spared_until FROM watchdog.rule_bounds b;
    bound := coalesce(bound, 0.001);
    rise := coalesce(rise, 8.0 / 1048576);
    spacing := coalesce(spacing, interval '0.2 seconds');
    spared_until := coalesce(spared_until, 0.01);
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
    SELECT a.pid, a.backend_start, a.datid INTO me FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a;
    here := me.datid;
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
    -- the vault's sessions seen busy (in a transaction: not 'idle') at this look, with the look that began their run:
    -- a run goes on from the caller's previous look (within 1 s) that saw it busy, else starts at this one; the
    -- caller's rows are its currently busy vault sessions only
    INSERT INTO watchdog.notify_queue_busy AS b (caller_pid, caller_backend_start, pid, backend_start, busy_since,
                                                 seen_at)
    SELECT me.pid, me.backend_start, a.pid, a.backend_start, at, at
    FROM pg_catalog.pg_stat_get_activity(NULL) a
    WHERE a.xact_start IS NOT NULL
      AND a.usesysid IS NOT NULL
      AND a.backend_type OPERATOR(pg_catalog.=) 'client backend'
      AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
      AND pg_catalog.pg_has_role(a.usesysid, 'tokenvault_vault', 'MEMBER')
    ON CONFLICT ON CONSTRAINT notify_queue_busy_pkey DO UPDATE
    SET busy_since = CASE
                         WHEN b.seen_at OPERATOR(pg_catalog.=) w.looked_at
                              AND w.looked_at OPERATOR(pg_catalog.>=) (at OPERATOR(pg_catalog.-) interval '1 second')
                         THEN b.busy_since
                         ELSE excluded.busy_since
                     END,
        seen_at = excluded.seen_at;
    DELETE FROM watchdog.notify_queue_busy b
    WHERE b.caller_pid OPERATOR(pg_catalog.=) me.pid
      AND b.caller_backend_start OPERATOR(pg_catalog.=) me.backend_start
      AND b.seen_at OPERATOR(pg_catalog.<>) at;
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
        -- the vault's transactions begun before this caller's previous look (over the bound: its anchor or later)
        -- and at least `spacing` ago
        vault_since := LEAST(w.looked_at, at OPERATOR(pg_catalog.-) spacing);
        FOR holder IN
            SELECT c.pid, c.usesysid
            FROM (
                SELECT a.pid, a.usesysid, a.xact_start, v.category,
                       -- in a transaction since, or seen busy at each of this caller's looks since (0065)
                       LEAST(a.xact_start, b.busy_since) AS held_since,
                       -- a candidate by its busy run only: its transaction renewed without going idle
                       a.xact_start OPERATOR(pg_catalog.>=) vault_since AS renewing,
                       -- a key job's or the key-generation lock, in this database (0045's functions: no listener)
                       coalesce(v.category OPERATOR(pg_catalog.=) 2 AND a.datid OPERATOR(pg_catalog.=) here
                                AND k.pid IS NOT NULL, false) AS key_lock,
                       -- waiting for a lock (any: a row's, a transaction's, an advisory one): a request stuck behind
                       -- a holder, ended after the vault's sessions that run or sit idle in their transaction
                       coalesce(a.wait_event_type OPERATOR(pg_catalog.=) 'Lock', false) AS waiting
                FROM pg_catalog.pg_stat_get_activity(NULL) a
                CROSS JOIN LATERAL (
                    SELECT CASE
                               WHEN pg_catalog.pg_has_role(a.usesysid, 'tokenvault_vault', 'MEMBER') THEN 2
                               WHEN pg_catalog.pg_has_role(a.usesysid, 'tokenvault_etl', 'MEMBER') THEN 1
                               ELSE 0
                           END AS category
                ) v
                LEFT JOIN (
                    SELECT DISTINCT l.pid
                    FROM pg_catalog.pg_lock_status() l
                    WHERE l.granted
                      AND l.locktype OPERATOR(pg_catalog.=) 'advisory'
                      AND l.database OPERATOR(pg_catalog.=) here
                      AND ((l.classid OPERATOR(pg_catalog.=) 1953196655::oid
                            AND l.objsubid OPERATOR(pg_catalog.=) 2)
                           OR (l.classid OPERATOR(pg_catalog.=) 0::oid
                               AND l.objid OPERATOR(pg_catalog.=) 1801812339::oid
                               AND l.objsubid OPERATOR(pg_catalog.=) 1))
                ) k ON k.pid OPERATOR(pg_catalog.=) a.pid
                LEFT JOIN watchdog.notify_queue_busy b
                    ON b.caller_pid OPERATOR(pg_catalog.=) me.pid
                   AND b.caller_backend_start OPERATOR(pg_catalog.=) me.backend_start
                   AND b.pid OPERATOR(pg_catalog.=) a.pid
                   AND b.backend_start OPERATOR(pg_catalog.=) a.backend_start
                WHERE a.xact_start IS NOT NULL
                  AND a.usesysid IS NOT NULL
                  AND a.backend_type OPERATOR(pg_catalog.=) 'client backend'
                  AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
            ) c
            -- other logins' and the ETL's at any age; the vault's held (in a transaction or seen busy) since before
            -- vault_since, a key lock's holder only while the queue is past spared_until (any login: 0064)
            WHERE c.category OPERATOR(pg_catalog.<) 2
               OR (c.held_since OPERATOR(pg_catalog.<) vault_since
                   AND (NOT c.key_lock OR usage OPERATOR(pg_catalog.>) spared_until))
            ORDER BY c.category, c.key_lock,
                     CASE WHEN c.category OPERATOR(pg_catalog.<) 2 THEN c.xact_start END,  -- oldest first
                     c.waiting,  -- the vault's: lock waiters after the others
                     CASE WHEN c.waiting THEN c.held_since END,  -- the vault's waiters: longest held first
                     c.renewing,  -- the vault's others: old transactions first, then those by their busy run
                     CASE WHEN c.renewing THEN c.held_since END,  -- by their busy run: the longest first
                     c.xact_start DESC,  -- by their transaction: youngest first
                     c.pid
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

RESET ROLE;
