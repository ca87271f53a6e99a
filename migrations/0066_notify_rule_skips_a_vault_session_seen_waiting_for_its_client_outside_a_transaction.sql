-- The NOTIFY rule first samples the vault's busy sessions for up to 0.1 s and skips one it sees waiting for its
-- client's next message outside a transaction (review 37, R37-2).
--
-- 0065 ranks the vault's sessions that are candidates by their busy run only (seen in a transaction at every look),
-- the longest first. A pool connection of the vault serving requests back to back (a saturated pool) goes idle
-- between two requests for microseconds, which a look every 0.2 s rarely sees: one doing so since before a renewing
-- listener began had the longer run and was ended first (measured: pod B's request session ended, then the
-- listener, 2 of 2 runs of the reviewer's probe, 5 of 5 of the test below; each such end fails the request it
-- served and costs a look of queue growth).
-- What tells the two apart is what holding the tail is. A backend reads its notifications whenever it waits for
-- its client's next message outside a transaction: PostgresMain reads what is pending before it reports 'idle', and
-- a notify interrupt arriving while it waits on ClientRead is handled at once (in a transaction of its own, and again
-- until none came meanwhile). So a session seen 'idle', with no transaction, waiting on ClientRead, has read up to
-- the head: it is not the holder, whoever it is, and a listener cannot show that state and keep its position. Only
-- that state counts: 'idle' with xact_start set is 0056's backend blocked sending notifications to a client that
-- does not read them; 'idle' with no transaction and no wait event or ClientWrite is also seen between two passes
-- of reading or flushing them to such a client, not caught up.
-- So, once the rule reaches the vault's category at a look that ends someone, it samples the vault's sessions busy
-- at this look (its watchdog.notify_queue_busy rows) until 0.1 s has passed or each was seen so, clearing the
-- statistics snapshot before each sample (2,600-6,800 samples in 0.1 s measured here), and skips each seen so, gone,
-- or its pid taken by another session; the busy row of each goes, so its run starts over as after a look that saw it
-- idle. The order and every other rule of 0063-0065 are unchanged. The burst costs the watchdog's session up to 0.1 s
-- of one core at a look that ends a vault session (at most one per 0.2 s, only while the queue is past its bound and
-- rising) and delays that end as long.
-- Measured (tests/integration/test_notify_rule_renewing_listener.py, a request session serving back to back with a
-- 0.1 ms pause every 8 requests, H renewing from 0.6 s after the watchdog's start): H the first and only session
-- ended; on 0065 R first, then H (5 of 5). The renewing listener was seen so in none of the bursts.
-- Left: it is sampling. A pool connection whose gaps are all a few microseconds (the reviewer's probe: Python
-- serving two-statement transactions with no pause at all) was seen in 3 of 4 deciding bursts on this loaded
-- 2-core machine and still ended in the other, as on 0065. The vault's own connections go idle between the
-- statements of a request (autocommit) and between requests (the pool's hand-over), each at least a round trip.
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
    -- the vault's sessions busy at this look that the burst saw waiting outside a transaction (or gone): not holders
    seen_idle integer[];
    busy_pids integer[];
    busy_starts timestamptz[];
    burst interval := interval '100 milliseconds';
    burst_until timestamptz;
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
            SELECT c.pid, c.usesysid, c.category
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
            -- The vault's: first a burst of samples of its sessions busy at this look (0066); one seen waiting for
            -- its client's next message outside a transaction has read its notifications since - not the holder.
            IF holder.category OPERATOR(pg_catalog.=) 2 THEN
                IF seen_idle IS NULL THEN
                    seen_idle := '{}';
                    SELECT coalesce(pg_catalog.array_agg(b.pid), '{}'),
                           coalesce(pg_catalog.array_agg(b.backend_start), '{}')
                    INTO busy_pids, busy_starts
                    FROM watchdog.notify_queue_busy b
                    WHERE b.caller_pid OPERATOR(pg_catalog.=) me.pid
                      AND b.caller_backend_start OPERATOR(pg_catalog.=) me.backend_start;
                    burst_until := pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) burst;
                    LOOP
                        PERFORM pg_catalog.pg_stat_clear_snapshot();
                        seen_idle := seen_idle OPERATOR(pg_catalog.||) ARRAY(
                            SELECT s.pid
                            FROM ROWS FROM (pg_catalog.unnest(busy_pids), pg_catalog.unnest(busy_starts))
                                AS s (pid, backend_start)
                            LEFT JOIN LATERAL pg_catalog.pg_stat_get_activity(s.pid) a ON true
                            WHERE s.pid OPERATOR(pg_catalog.<>) ALL (seen_idle)
                              AND (a.pid IS NULL  -- gone
                                   OR a.backend_start OPERATOR(pg_catalog.<>) s.backend_start  -- its pid taken
                                   OR (a.state OPERATOR(pg_catalog.=) 'idle' AND a.xact_start IS NULL
                                       AND a.wait_event OPERATOR(pg_catalog.=) 'ClientRead')));
                        EXIT WHEN pg_catalog.clock_timestamp() OPERATOR(pg_catalog.>=) burst_until
                               OR pg_catalog.cardinality(seen_idle) OPERATOR(pg_catalog.=)
                                  pg_catalog.cardinality(busy_pids);
                    END LOOP;
                    DELETE FROM watchdog.notify_queue_busy b
                    WHERE b.caller_pid OPERATOR(pg_catalog.=) me.pid
                      AND b.caller_backend_start OPERATOR(pg_catalog.=) me.backend_start
                      AND b.pid OPERATOR(pg_catalog.=) ANY (seen_idle);
                END IF;
                CONTINUE WHEN holder.pid OPERATOR(pg_catalog.=) ANY (seen_idle);
            END IF;
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
