-- The NOTIFY rule ends, first and all in one look, every session seen blocked writing to its client outside a
-- statement at two consecutive looks; a session with no transaction waiting on ClientWrite is a candidate (attack
-- 42, A42-1/2/3).
--
-- 0056-0066 took only sessions in a transaction, on the premise that every session that can hold the queue's tail
-- is in one. It is false: a backend reads its notifications in a transaction of its own (ProcessIncomingNotify),
-- commits, then flushes them to its client outside it. If the client does not read (a 4 kB receive buffer, never
-- read), that flush blocks: 'idle', xact_start NULL, wait_event ClientWrite. PostgreSQL's blocking send handles only
-- the die interrupt, so later notify interrupts are never processed and the queue position stays where the pass
-- ended: it holds the tail and, listening on a channel no one else uses, nothing ever moves it. Measured (the tests
-- below on 0066): the analysts' login held the queue to the test's 64 MB cap with the watchdog ending no one; a vault
-- login's holder had another pod's requests ended instead (1-4 per run), an analyst's, the ETL's or a watchdog
-- member's had the ETL's batches ended at every look (11-12 in 3.5 s).
-- What tells such a session apart is that it stays so: a backend blocked sending to a client that reads nothing is
-- seen waiting on ClientWrite, outside any statement of its own, with the same state_change, look after look. The
-- vault and the ETL read their connections promptly: their backends wait on ClientWrite only while the socket's
-- buffers are full, i.e. while their process does not read for that long. A session of theirs streaming a large
-- result does so inside its transaction while 'active' (not counted here: never a prime suspect); after the commit
-- only the last 8 kB buffer, CommandComplete and ReadyForQuery are left to send.
-- So each look keeps (watchdog.notify_queue_stalled, keyed as 0065's busy rows, going with the caller's state) the
-- client backends it sees waiting on ClientWrite with no transaction, or 'idle' in a transaction (a listener's read
-- pass blocked mid-way: 0056's state - no statement runs 'idle'), with their state_change; a row seen at the
-- caller's previous look (within 1 s) with the same backend_start and state_change keeps its "stalled since". At a
-- look that ends (the queue past its bound and risen: 0053-0064's pace, unchanged) every session stalled since
-- before this look - seen so at two consecutive looks 0.25 s apart, its state unchanged between - is ended, all of
-- them, before anyone else and in one look (a relay of 10 such listeners went one per look: 2.5 s), any login but
-- the owner's members (as before) and the vault's key-lock holders under notify_queue_spared_until (0064's spare,
-- unchanged). Such a session serves no one while it stays so. If none is, the look goes on as 0066's: a session with
-- no transaction waiting on ClientWrite is now a candidate there too (its age from its state_change; in the vault's
-- category by its busy run, which now counts that state as busy), so a holder seen so at one look only still goes
-- in its category's order. 0066's burst still spares only a session seen waiting on ClientRead.
-- The function returns one row per session ended at the look (one, pid NULL, when it ends no one).
-- Left: a vault or ETL connection whose process does not read for over a look (a pod stalled 0.25 s or more with a
-- reply pending) while the queue is past its bound and rising is ended with the holders; its request fails. A holder
-- whose client reads just enough to be seen in a different state at every other look is not a prime suspect; it is
-- the candidate of its category's order that it was before (0056-0066).
-- Re-runnable: CREATE ... IF NOT EXISTS, CREATE OR REPLACE.
SET ROLE tokenvault_owner;

CREATE TABLE IF NOT EXISTS watchdog.notify_queue_stalled (
    caller_pid integer NOT NULL,
    caller_backend_start timestamptz NOT NULL,
    pid integer NOT NULL,
    backend_start timestamptz NOT NULL,
    state_change timestamptz,
    stalled_since timestamptz NOT NULL,
    seen_at timestamptz NOT NULL,
    CONSTRAINT notify_queue_stalled_pkey PRIMARY KEY (caller_pid, caller_backend_start, pid, backend_start),
    FOREIGN KEY (caller_pid, caller_backend_start) REFERENCES watchdog.notify_queue_looks (pid, backend_start)
        ON DELETE CASCADE
);
REVOKE ALL ON TABLE watchdog.notify_queue_stalled FROM PUBLIC;

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
    -- rows already returned: one per session ended as stalled at this look (0067)
    returned boolean := false;
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
    -- in a transaction, or blocked writing to its client outside one (0067: not waiting for its client either)
    WHERE (a.xact_start IS NOT NULL OR a.wait_event OPERATOR(pg_catalog.=) 'ClientWrite')
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
    -- every login's client backends seen blocked writing to their client outside a statement of their own: no
    -- transaction, or 'idle' in one (a listener's read pass); stalled since the first of the caller's consecutive
    -- looks (each within 1 s of the one before) that saw it so with the same state_change (0067)
    INSERT INTO watchdog.notify_queue_stalled AS t (caller_pid, caller_backend_start, pid, backend_start,
                                                    state_change, stalled_since, seen_at)
    SELECT me.pid, me.backend_start, a.pid, a.backend_start, a.state_change, at, at
    FROM pg_catalog.pg_stat_get_activity(NULL) a
    WHERE a.wait_event OPERATOR(pg_catalog.=) 'ClientWrite'
      AND (a.xact_start IS NULL OR a.state OPERATOR(pg_catalog.=) 'idle')
      AND a.usesysid IS NOT NULL
      AND a.backend_type OPERATOR(pg_catalog.=) 'client backend'
      AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
    ON CONFLICT ON CONSTRAINT notify_queue_stalled_pkey DO UPDATE
    SET stalled_since = CASE
                            WHEN t.seen_at OPERATOR(pg_catalog.=) w.looked_at
                                 AND w.looked_at OPERATOR(pg_catalog.>=) (at OPERATOR(pg_catalog.-) interval '1 second')
                                 AND t.state_change IS NOT DISTINCT FROM excluded.state_change
                            THEN t.stalled_since
                            ELSE excluded.stalled_since
                        END,
        state_change = excluded.state_change,
        seen_at = excluded.seen_at;
    DELETE FROM watchdog.notify_queue_stalled t
    WHERE t.caller_pid OPERATOR(pg_catalog.=) me.pid
      AND t.caller_backend_start OPERATOR(pg_catalog.=) me.backend_start
      AND t.seen_at OPERATOR(pg_catalog.<>) at;
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
        -- every session seen stalled at this look and the one before: ended first, all of them (0067); the vault's
        -- key-lock holders spared to the mark as in 0064 (they come last in the order below)
        FOR holder IN
            SELECT a.pid, a.usesysid
            FROM watchdog.notify_queue_stalled t
            JOIN pg_catalog.pg_stat_get_activity(NULL) a
                ON a.pid OPERATOR(pg_catalog.=) t.pid AND a.backend_start OPERATOR(pg_catalog.=) t.backend_start
            WHERE t.caller_pid OPERATOR(pg_catalog.=) me.pid
              AND t.caller_backend_start OPERATOR(pg_catalog.=) me.backend_start
              AND t.stalled_since OPERATOR(pg_catalog.<) at
              AND (usage OPERATOR(pg_catalog.>) spared_until
                   OR NOT pg_catalog.pg_has_role(a.usesysid, 'tokenvault_vault', 'MEMBER')
                   OR a.datid OPERATOR(pg_catalog.<>) here
                   OR NOT EXISTS (
                       SELECT FROM pg_catalog.pg_lock_status() l
                       WHERE l.pid OPERATOR(pg_catalog.=) a.pid
                         AND l.granted
                         AND l.locktype OPERATOR(pg_catalog.=) 'advisory'
                         AND l.database OPERATOR(pg_catalog.=) here
                         AND ((l.classid OPERATOR(pg_catalog.=) 1953196655::oid
                               AND l.objsubid OPERATOR(pg_catalog.=) 2)
                              OR (l.classid OPERATOR(pg_catalog.=) 0::oid
                                  AND l.objid OPERATOR(pg_catalog.=) 1801812339::oid
                                  AND l.objsubid OPERATOR(pg_catalog.=) 1))))
            ORDER BY t.stalled_since, a.pid
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
            passed_at := w.passed_at;
            ended_so_far := w.ended_so_far;
            RETURN NEXT;
            returned := true;
        END LOOP;
        EXIT look WHEN returned;
        FOR holder IN
            SELECT c.pid, c.usesysid, c.category
            FROM (
                -- blocked writing to its client with no transaction: aged from its state_change (0067)
                SELECT a.pid, a.usesysid, coalesce(a.xact_start, a.state_change) AS xact_start, v.category,
                       -- in a transaction since, or seen busy at each of this caller's looks since (0065)
                       LEAST(a.xact_start, b.busy_since) AS held_since,
                       -- a candidate by its busy run only: its transaction renewed without going idle
                       coalesce(a.xact_start OPERATOR(pg_catalog.>=) vault_since, true) AS renewing,
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
                WHERE (a.xact_start IS NOT NULL OR a.wait_event OPERATOR(pg_catalog.=) 'ClientWrite')
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
    IF NOT returned THEN
        passed_at := w.passed_at;
        ended_so_far := w.ended_so_far;
        RETURN NEXT;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION watchdog.end_notify_queue_holder() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION watchdog.end_notify_queue_holder() TO tokenvault_watchdog;

RESET ROLE;
