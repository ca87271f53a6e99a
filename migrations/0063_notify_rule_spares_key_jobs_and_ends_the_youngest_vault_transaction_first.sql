-- The NOTIFY rule never ends a vault session holding a key job's or the key-generation lock, ends the vault's other
-- transactions youngest first, and reaches a vault listener begun after the crossing (attack 33, A5).
--
-- 0054/0056/0060/0062 put every login IN ROLE tokenvault_vault in one category, last, oldest transaction first, and
-- only those begun before the caller's anchor. Kubernetes' Vault makes one such login per pod, and PostgreSQL refuses
-- a login `pg_terminate_backend` of another login's session (InsufficientPrivilege). But pod A's login (an insider in
-- pod A's container) holding the queue's tail with a listener of its own (`LISTEN q; BEGIN; SELECT 1`, then a
-- notifier) had the watchdog end pod B's key-job hold (`vault.hold_key_job`, a transaction held for the job's whole
-- length: older than the listener) before its own listener - measured 0.93-1.0 s, the listener at 1.21-1.25 s. And a
-- listener of that login begun after the anchor (a relay: 0056's "Left") was never a candidate at all.
--
-- Now, in the vault's category (other logins' and the ETL's categories and order are 0056's, unchanged):
-- 1. A session holding a key job's lock (the int4 pair (1953196655, key), key_job_liveness.py) or the key-generation
--    lock (0x6B657973, keys.py, tokens.py), any mode, in the caller's database, is never ended by this rule. Such a
--    session cannot hold the queue's tail: vault.hold_key_job, vault.try_claim_key_job, vault.lock_key_generation
--    and vault.lock_key_generation_shared (0045: the serving role's only way to those locks) now refuse a session
--    that LISTENs (object_not_in_prerequisite_state). Only a registered listener holds the tail, and a LISTEN in a
--    transaction registers at its commit, when that transaction's locks are gone; UNLISTEN is deferred to commit too
--    (pg_listening_channels() still lists it), and a session listening to nothing holds nothing. The vault never
--    LISTENs. So a member login cannot make its listener immune by taking a key job's lock.
--    Where 0045 could only warn (a migrator that is not a superuser: a managed PostgreSQL) a login may still take
--    those locks through pg_catalog's advisory functions, around the vault's functions: a session of a login that may
--    run any of them is spared only while the queue's usage is at or under watchdog.rule_bounds'
--    notify_queue_spared_until (0.01, ~86 MB: ten times the bound); past it, it is a candidate after every other
--    vault session. The spare counts only locks in the caller's database (the vault's: 0045's revoke is per
--    database; a listener elsewhere in the cluster holds the same queue).
-- 2. The others, youngest transaction first (a listener holding the tail began holding shortly before the queue
--    grew; the vault's own long transactions - key jobs - are the oldest), then, past notify_queue_spared_until, the
--    spared sessions of 1.'s logins, youngest first.
-- 3. A vault transaction is a candidate once it began before the caller's previous look and at least the shortest
--    time between two ends (0.2 s) ago - not only before the anchor: a relay listener has to begin holding before
--    its predecessor is ended (else the queue is cut when it is), so it is a candidate at the next look. A call
--    cannot narrow the window by calling often (the 0.2 s). The vault's calls begun since are left, as 0054 wanted:
--    with a holder the rule may not end (a superuser's), it ends vault transactions that lasted over a look, one per
--    0.2 s while the queue rises, none of them a key job.
-- What a member login of tokenvault_vault can still do: its listener is ended after its own younger transactions
-- and after the other logins' (pod B's) vault transactions in flight that began after it and before the previous
-- look and hold no key lock - requests lasting over ~0.25 s; that delay is bounded by its login's CONNECTION LIMIT
-- (decoys: candidates x 0.2 s x its send rate, as an analyst's, 0060's "Left"); and the ETL's open transactions are
-- still ended before any vault session (0054's order: the ETL's category comes first).
-- Re-runnable: ADD COLUMN IF NOT EXISTS, CREATE OR REPLACE.
SET ROLE tokenvault_owner;

ALTER TABLE watchdog.rule_bounds ADD COLUMN IF NOT EXISTS notify_queue_spared_until double precision NOT NULL
    DEFAULT 0.01 CHECK (notify_queue_spared_until > 0 AND notify_queue_spared_until < 1);

CREATE OR REPLACE FUNCTION vault.lock_key_generation_shared() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    waited text;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) THEN
        RAISE EXCEPTION 'the key-generation lock is not taken by a session that LISTENs (migration 0063)'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF NOT pg_try_advisory_xact_lock_shared(1801812339) THEN  -- 0x6B657973, 'keys'
        waited := pg_catalog.current_setting('lock_timeout');
        PERFORM pg_catalog.set_config('lock_timeout', '2s', true);
        PERFORM pg_advisory_xact_lock_shared(1801812339);
        PERFORM pg_catalog.set_config('lock_timeout', waited, true);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION vault.lock_key_generation() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) THEN
        RAISE EXCEPTION 'the key-generation lock is not taken by a session that LISTENs (migration 0063)'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM pg_advisory_xact_lock(1801812339);  -- under the caller's lock_timeout (keys.py: 2 s)
END
$$;

CREATE OR REPLACE FUNCTION vault.hold_key_job(key integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) THEN
        RAISE EXCEPTION 'a key job''s lock is not taken by a session that LISTENs (migration 0063)'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF vault.key_job_locks_held() >= 4 THEN
        RAISE EXCEPTION 'a transaction may hold at most 4 key-job locks' USING ERRCODE = 'program_limit_exceeded';
    END IF;
    PERFORM pg_advisory_xact_lock_shared(1953196655, key);  -- under the caller's lock_timeout
END
$$;

CREATE OR REPLACE FUNCTION vault.try_claim_key_job(key integer) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) THEN
        RAISE EXCEPTION 'a key job''s lock is not taken by a session that LISTENs (migration 0063)'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF vault.key_job_locks_held() >= 4 THEN
        RAISE EXCEPTION 'a transaction may hold at most 4 key-job locks' USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN pg_try_advisory_xact_lock(1953196655, key);
END
$$;

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
                                AND k.pid IS NOT NULL, false) AS key_lock
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
            -- never - unless its login may take those locks around 0045's functions and the queue is past
            -- spared_until
            WHERE c.category OPERATOR(pg_catalog.<) 2
               OR (c.xact_start OPERATOR(pg_catalog.<) vault_since
                   AND (NOT c.key_lock
                        OR (usage OPERATOR(pg_catalog.>) spared_until
                            AND EXISTS (
                                SELECT FROM pg_catalog.pg_proc p
                                WHERE p.pronamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
                                  AND p.proname OPERATOR(pg_catalog.~~) 'pg%advisory%'
                                  AND pg_catalog.has_function_privilege(c.usesysid, p.oid, 'EXECUTE')))))
            ORDER BY c.category, c.key_lock,
                     CASE WHEN c.category OPERATOR(pg_catalog.<) 2 THEN c.xact_start END,  -- oldest first
                     c.xact_start DESC,  -- the vault's: youngest first
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
