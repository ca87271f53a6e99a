-- The NOTIFY rule ends the vault's lock waiters after its other transactions (the longest waiting first) and spares a
-- key lock's holder of any login only to notify_queue_spared_until (attack 35, N1).
--
-- 0063 ended the vault's transactions youngest first and spared every key-lock holder of a login that may not run
-- pg_catalog's advisory functions. Pod A's member login (an insider in pod A's container) kept a listener H
-- (`LISTEN q; BEGIN; SELECT 1`) holding the queue's tail while two other sessions of it took turns (each under 2 s)
-- holding what pod B's requests need: (a) the key-generation lock through the vault's own vault.lock_key_generation()
-- (spared), (b) the ETL client's metering row through vault.take_call_budget (not spared, but older than its waiters).
-- Pod B's requests waited on that lock, younger than H: the watchdog ended 22-25 of pod B's sessions instead of H and
-- the queue reached the tester's cap (96 MB), in 5 of 5 runs for (a).
--
-- Now, in the vault's category (the other categories, the window and the spacing are 0063's, unchanged):
-- 1. A vault transaction waiting for a lock (pg_stat_activity's wait_event_type 'Lock': a row's, a transaction's,
--    an advisory lock) is a candidate only after every vault transaction that runs or sits idle in it - those
--    youngest first, as 0063. A request queued behind a holder is its victim: what holds the tail is a listener that
--    does not read, and one stuck on a lock is the exception, not the rule. The waiters are still candidates, the
--    longest waiting (oldest transaction) first: a listener made to wait on a lock of another of its login's
--    sessions (take_call_budget retried under a savepoint, as the test does) began holding before the queue grew,
--    the vault's requests wait at most 2 s (lock_timeout) and its transactions last at most the lock watch's 5 s, so
--    it is ended before the requests that queued after it - and the rule never runs out of candidates while some
--    vault transaction holds the tail.
-- 2. A key job's or the key-generation lock's holder is spared only while the queue's usage is at or under
--    watchdog.rule_bounds' notify_queue_spared_until (0.01, ~86 MB) - for every login now, not only one that may run
--    the advisory functions: past it, it is a candidate after every other vault session (non-waiters youngest first,
--    then waiters oldest first). So a spared blocker cannot sit out the queue's growth: past the mark it is ended,
--    which frees its waiters. A key job ended this way loses its hold as when its process dies (key_job_liveness.py:
--    its intent row is listed interrupted); it takes a queue ten times the bound and no other vault session to end.
-- What a member login of tokenvault_vault can still do: its listener is ended after its own younger running or idle
-- transactions (its own decoys, 0063's "Left": bounded by its CONNECTION LIMIT) and after the ETL's; a listener that
-- is itself waiting on a lock goes after the vault's non-waiting transactions (its own, pod B's in flight) and after
-- waiters older than it - pod B's requests wait under 2 s, so at most the ones already queued when it began.
-- Re-runnable: CREATE OR REPLACE.
SET ROLE tokenvault_owner;

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
                WHERE a.xact_start IS NOT NULL
                  AND a.usesysid IS NOT NULL
                  AND a.backend_type OPERATOR(pg_catalog.=) 'client backend'
                  AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
            ) c
            -- other logins' and the ETL's at any age; the vault's begun before vault_since, a key lock's holder
            -- only while the queue is past spared_until (any login: 0064)
            WHERE c.category OPERATOR(pg_catalog.<) 2
               OR (c.xact_start OPERATOR(pg_catalog.<) vault_since
                   AND (NOT c.key_lock OR usage OPERATOR(pg_catalog.>) spared_until))
            ORDER BY c.category, c.key_lock,
                     CASE WHEN c.category OPERATOR(pg_catalog.<) 2 THEN c.xact_start END,  -- oldest first
                     c.waiting,  -- the vault's: lock waiters after the others
                     CASE WHEN c.waiting THEN c.xact_start END,  -- the vault's waiters: oldest first
                     c.xact_start DESC,  -- the vault's others: youngest first
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
