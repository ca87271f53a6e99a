-- The watchdog's rules take no bound and no time anchor from their caller (attack 32, F10).
--
-- 0053/0054/0056's watchdog.end_notify_queue_holder(bound, before) took the usage bound and "when the queue passed
-- it" from its caller, and its login is an insider too (a stolen pod credential): `(-1, 'infinity')` ended one
-- client session in a transaction per call, of any login but a superuser and the owner's members - measured, 76 of
-- the vault's sessions and the ETL's batch ended in 8 s, 9 of 20 vault calls failed, on an EMPTY queue. 0057's
-- watchdog.end_old_transactions(bound) took its bound from the caller too: 0.001 s ended every analyst's and the
-- ETL's transaction on demand. 0048's promise was that this login may end lock hogs and nothing else.
--
-- Now:
-- 1. watchdog.end_notify_queue_holder() has no parameters. The rule, and its state, are the server's:
--    - the bound (share of the queue's maximum, 0.001 ~ 8.4 MB), the rise that shows the tail still held after an
--      end (8 pages) and the shortest time between two ends (0.2 s: the watchdog looks every 0.25 s) are in
--      watchdog.rule_bounds, one row of the owner's (no other role may read or change it; a private test cluster
--      may change it as the owner, as 0050's vault.lock_watch_floor);
--    - the anchor (when a call first saw the usage over the bound, on the server's clock), the lowest usage seen
--      since the last end, the last end's time and the count of ends are in watchdog.notify_queue_watch, one row
--      of the owner's, written by the function alone and reset when a call sees the usage under the bound;
--    - a call ends a session only if the usage is over the bound, the anchor was set 0.2 s ago or more by an
--      earlier call, the last end was 0.2 s ago or more, and (after an end) the usage has risen 8 pages above its
--      lowest seen since: what the watchdog's NotifyQueueWatch did in Python until now, moved here. Its
--      candidates and order are 0056's, with the server's anchor as `before`: other logins' sessions in a
--      transaction first (the watchdog's own login is one: its listeners are ended before any ETL or vault
--      session), then the ETL's, oldest first, whenever they began; the vault's last and only those in a
--      transaction begun before the anchor.
--    - a caller whose own session LISTENs is refused: its session (never a candidate) could hold the tail itself.
--    - concurrent calls: one at a time (the state row locked, SKIP LOCKED: a call finding it locked ends nothing).
--    So a call of the watchdog's login is one more look of the watchdog: on an empty queue it ends nothing, and to
--    end anything it must hold the queue's tail with a listener of its own, which the rule ends first.
-- 2. watchdog.end_old_transactions(bound) ends transactions older than greatest(bound, the floor), the floor in
--    watchdog.rule_bounds (300 s: the product's default). The caller may raise the bound, never lower it. It
--    returns the bound in force in a new column `in_force` (the watchdog logs at its start when its setting is under
--    the floor).
-- 3. watchdog.end_vault_sessions_past_budget(budget) (0059, landed today) took its budget from the caller: `(1)`
--    ended every session of the vault's logins but one, at each call. Now the budget in force is the greater of the
--    caller's (or, with none, tokenvault_vault's CONNECTION LIMIT, as 0059) and a floor: watchdog.rule_bounds'
--    vault_sessions_floor, or with none there tokenvault_vault's CONNECTION LIMIT (0046's share). With neither (the
--    role has no limit and the owner set no floor) it ends nothing: a caller's budget alone is never trusted.
-- Left: the rule's own limits (0056): an analyst's listener - or the watchdog's login's - ends older transactions
-- of other analysts' first, and after its last listener is ended, a notifier whose one transaction sends many MB
-- keeps the usage rising until it commits (the tail is cut at a notifier's commit), during which a look may end
-- the next candidate (the ETL's transaction): at most one per 0.2 s, as the watchdog's own looks would.
-- Re-runnable: CREATE ... IF NOT EXISTS, ON CONFLICT DO NOTHING, DROP ... IF EXISTS.
SET ROLE tokenvault_owner;

CREATE TABLE IF NOT EXISTS watchdog.rule_bounds (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    notify_queue_bound double precision NOT NULL CHECK (notify_queue_bound > 0 AND notify_queue_bound < 1),
    notify_queue_rise double precision NOT NULL CHECK (notify_queue_rise >= 0),
    notify_queue_end_seconds double precision NOT NULL CHECK (notify_queue_end_seconds >= 0),
    max_transaction_floor_seconds double precision NOT NULL CHECK (max_transaction_floor_seconds > 0),
    vault_sessions_floor integer CHECK (vault_sessions_floor >= 1)
);
INSERT INTO watchdog.rule_bounds
    (one, notify_queue_bound, notify_queue_rise, notify_queue_end_seconds, max_transaction_floor_seconds)
VALUES (true, 0.001, 8.0 / 1048576, 0.2, 300)
ON CONFLICT DO NOTHING;
REVOKE ALL ON TABLE watchdog.rule_bounds FROM PUBLIC;

CREATE TABLE IF NOT EXISTS watchdog.notify_queue_watch (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    passed_at timestamptz,
    low_since_end double precision,
    ended_at timestamptz,
    ended_so_far integer NOT NULL DEFAULT 0
);
INSERT INTO watchdog.notify_queue_watch (one) VALUES (true) ON CONFLICT DO NOTHING;
REVOKE ALL ON TABLE watchdog.notify_queue_watch FROM PUBLIC;

DROP FUNCTION IF EXISTS watchdog.end_notify_queue_holder(double precision, timestamptz);

CREATE OR REPLACE FUNCTION watchdog.end_notify_queue_holder()
RETURNS TABLE (usage double precision, bound double precision, at timestamptz, passed_at timestamptz,
               wanted boolean, pid integer, login text, ended boolean, ended_so_far integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rise double precision;
    spacing interval;
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
    SELECT s.passed_at, s.low_since_end, s.ended_at, s.ended_so_far INTO w
    FROM watchdog.notify_queue_watch s FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN  -- another call holds it (or the row is gone): this one ends nothing
        RETURN NEXT;
        RETURN;
    END IF;
    IF usage OPERATOR(pg_catalog.<=) bound THEN
        UPDATE watchdog.notify_queue_watch
        SET passed_at = NULL, low_since_end = NULL, ended_at = NULL, ended_so_far = 0;
        ended_so_far := 0;
        RETURN NEXT;
        RETURN;
    END IF;
    IF w.passed_at IS NULL THEN  -- the first look over the bound: the anchor, on the server's clock
        UPDATE watchdog.notify_queue_watch
        SET passed_at = at, low_since_end = NULL, ended_at = NULL, ended_so_far = 0;
        passed_at := at;
        ended_so_far := 0;
        RETURN NEXT;
        RETURN;
    END IF;
    passed_at := w.passed_at;
    ended_so_far := w.ended_so_far;
    IF w.low_since_end IS NOT NULL THEN
        w.low_since_end := LEAST(w.low_since_end, usage);
        UPDATE watchdog.notify_queue_watch SET low_since_end = w.low_since_end;
    END IF;
    -- under the bound, or not risen since the last end, or too soon after the anchor or the last end: nothing
    IF (usage OPERATOR(pg_catalog.<=) GREATEST(bound, coalesce(w.low_since_end OPERATOR(pg_catalog.+) rise, bound)))
       OR (at OPERATOR(pg_catalog.<)
           (GREATEST(w.passed_at, coalesce(w.ended_at, w.passed_at)) OPERATOR(pg_catalog.+) spacing)) THEN
        RETURN NEXT;
        RETURN;
    END IF;
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
        -- other logins' and the ETL's at any age; the vault's only if older than the server's anchor
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
        ended_so_far := ended_so_far OPERATOR(pg_catalog.+) 1;
        UPDATE watchdog.notify_queue_watch
        SET low_since_end = usage, ended_at = at, ended_so_far = end_notify_queue_holder.ended_so_far;
        RAISE LOG 'watchdog.end_notify_queue_holder: login % ended pid % (%), the NOTIFY queue at % of its maximum',
            session_user, holder.pid, login, usage;
        EXIT;
    END LOOP;
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION watchdog.end_notify_queue_holder() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION watchdog.end_notify_queue_holder() TO tokenvault_watchdog;

DROP FUNCTION IF EXISTS watchdog.end_old_transactions(double precision);

CREATE FUNCTION watchdog.end_old_transactions(bound double precision)
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
        IF old.age OPERATOR(pg_catalog.<=) in_force THEN
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

-- 0059's function, its budget never under the floor (same signature and columns: its callers unchanged).
CREATE OR REPLACE FUNCTION watchdog.end_vault_sessions_past_budget(budget integer)
RETURNS TABLE (pid integer, login text, idle boolean, ended boolean, sessions integer, held_to integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    vault oid := 'tokenvault_vault'::pg_catalog.regrole;
    role_limit integer;
    budget_floor integer;
    allowed integer := budget;
    counted integer;
    excess integer;
    member record;
BEGIN
    SELECT r.rolconnlimit INTO role_limit FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) vault;
    IF role_limit OPERATOR(pg_catalog.<) 1 THEN
        role_limit := NULL;
    END IF;
    budget_floor := coalesce((SELECT b.vault_sessions_floor FROM watchdog.rule_bounds b), role_limit);
    IF allowed IS NULL OR allowed OPERATOR(pg_catalog.<) 1 THEN
        allowed := role_limit;
    END IF;
    -- the caller may raise the budget, never lower it under the floor; with no floor, no budget is trusted
    allowed := CASE WHEN budget_floor IS NULL THEN NULL ELSE GREATEST(allowed, budget_floor) END;
    SELECT pg_catalog.count(*)::integer INTO counted
    FROM pg_catalog.pg_stat_get_activity(NULL) a
    WHERE a.usesysid IS NOT NULL
      AND a.backend_type OPERATOR(pg_catalog.=) 'client backend'
      AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
      AND pg_catalog.pg_has_role(a.usesysid, vault, 'MEMBER')
      AND NOT pg_catalog.pg_has_role(a.usesysid, 'tokenvault_owner', 'MEMBER');
    excess := counted OPERATOR(pg_catalog.-) coalesce(allowed, counted);
    IF excess OPERATOR(pg_catalog.>) 0 THEN
        FOR member IN
            SELECT a.pid, a.usesysid, a.state
            FROM pg_catalog.pg_stat_get_activity(NULL) a
            WHERE a.usesysid IS NOT NULL
              AND a.backend_type OPERATOR(pg_catalog.=) 'client backend'
              AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
              AND pg_catalog.pg_has_role(a.usesysid, vault, 'MEMBER')
              AND NOT pg_catalog.pg_has_role(a.usesysid, 'tokenvault_owner', 'MEMBER')
              AND NOT EXISTS (  -- appending: the audit chain's lock held
                  SELECT FROM pg_catalog.pg_lock_status() l
                  WHERE l.pid OPERATOR(pg_catalog.=) a.pid AND l.granted
                    AND l.locktype OPERATOR(pg_catalog.=) 'advisory'
                    AND l.classid OPERATOR(pg_catalog.=) 0::oid
                    AND l.objid OPERATOR(pg_catalog.=) 1635083380::oid
                    AND l.objsubid OPERATOR(pg_catalog.=) 1)
            ORDER BY a.usesysid DESC,
                     a.state IS NOT DISTINCT FROM 'idle' DESC, a.backend_start DESC, a.pid DESC
        LOOP
            EXIT WHEN excess OPERATOR(pg_catalog.<=) 0;
            pid := member.pid;
            login := pg_catalog.pg_get_userbyid(member.usesysid)::text;
            idle := member.state IS NOT DISTINCT FROM 'idle';
            BEGIN
                ended := pg_catalog.pg_terminate_backend(member.pid);
            EXCEPTION WHEN insufficient_privilege THEN  -- the owner lacks pg_signal_backend
                ended := false;
            END;
            excess := excess OPERATOR(pg_catalog.-) 1;
            sessions := NULL;
            held_to := NULL;
            RETURN NEXT;
        END LOOP;
    END IF;
    pid := NULL;
    login := NULL;
    idle := NULL;
    ended := NULL;
    sessions := counted;
    held_to := allowed;
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION watchdog.end_vault_sessions_past_budget(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION watchdog.end_vault_sessions_past_budget(integer) TO tokenvault_watchdog;

RESET ROLE;
