-- vault.end_role_session ends a session only once the lock watch's own rules would (attack 30, F2).
--
-- Migration 0042 gave every login of tokenvault_vault (one Vault-made login per pod in Kubernetes, the admin
-- Job's) EXECUTE on vault.end_role_session, whose only conditions were "still that session in that transaction"
-- and "holds a watched lock or keeps a member waiting" - nothing about how long. So one pod's login, looping
-- one statement, ended the other pods' appends, new-token inserts and key operations mid-commit, on demand
-- (measured: 7-8 of 10 calls failed, 0 of 30 without the function; 3 of 3 key rotations failed).
--
-- The watch (vault_service/adapters/postgres/chain_lock.py) calls the function for these rules only:
--   1. a session holding a watched lock 5 s (HELD_SECONDS) in one transaction (idle, outside any: in one session);
--   2. a session keeping a member waiting for any lock 5 s in one transaction;
--   3. a session keeping this process's key operation waiting 1 s (KEY_JOB_WAITED_SECONDS);
--   4. a session keeping a member waiting 1 s for the audit chain's lock (CHAIN_WAITED_SECONDS), holder or queued;
--   and: a session keeping a member waiting that has held a watched lock 5 s (the key job a relay keeps waiting).
-- The function now checks, on the server's clock (clock_timestamp, pg_locks.waitstart), that one of them holds,
-- in the weakest form that still covers each:
--   (a) its transaction began `held` (5 s) ago or more - outside any transaction, its session - and it holds a
--       watched lock or keeps a member waiting (rules 1, 2: the watch counts from its first sighting in that
--       transaction, never before the transaction began);
--   (b) it keeps a member session waiting whose wait for that lock began `waited` (1 s) ago or more (rules 3, 4);
--   (c) it keeps a member session waiting that holds a watched lock in a transaction begun `held` ago or more.
-- Else it returns false and the session goes on. The session is still that session in that transaction and
-- still holding or blocking, as before (NULL when not); never one waiting for a synchronous standby.
--
-- What it does not stop (docs/threat-model.md, attack 30 F2): a login may still make a member session of its
-- own wait 1 s behind another login's session and then end it (a key operation holding the key-generation
-- lock over 1 s; an append that has waited 1 s already), or hold a watched lock 5 s and then wait. Each costs it
-- a session the vault's rules end (a holder of 1 s keeping the chain waiting, of 5 s anything). The real fix is
-- EXECUTE on the function for a login that is not a member of tokenvault_vault (the watchdog's of 0048).
--
-- The bounds are a one-row table of the owner's (vault.lock_watch_floor; nobody else may read or change it), so
-- that a private test database may bring them down to a test watch's shorter timers. Missing: 5 s and 1 s.
-- Each session ended is logged (RAISE LOG, the server's log): by which login, which pid, under which condition.
-- Re-runnable: CREATE ... IF NOT EXISTS, ON CONFLICT DO NOTHING, CREATE OR REPLACE.

SET ROLE tokenvault_owner;

CREATE TABLE IF NOT EXISTS vault.lock_watch_floor (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    held_seconds double precision NOT NULL CHECK (held_seconds >= 0),
    waited_seconds double precision NOT NULL CHECK (waited_seconds >= 0)
);
INSERT INTO vault.lock_watch_floor (one, held_seconds, waited_seconds) VALUES (true, 5, 1) ON CONFLICT DO NOTHING;
REVOKE ALL ON TABLE vault.lock_watch_floor FROM PUBLIC;

-- search_path pinned to pg_catalog first: every operator and function below resolves there (pg_temp, last, is
-- never searched for operators or functions).
CREATE OR REPLACE FUNCTION vault.end_role_session(target integer, started timestamptz, in_transaction timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    here oid := (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database());
    clock timestamptz := pg_catalog.clock_timestamp();
    held interval;
    waited interval;
    s record;
    holds boolean;
    blocks boolean;
    why text;
BEGIN
    SELECT pg_catalog.make_interval(secs => f.held_seconds), pg_catalog.make_interval(secs => f.waited_seconds)
    INTO held, waited FROM vault.lock_watch_floor f;
    held := coalesce(held, interval '5 seconds');
    waited := coalesce(waited, interval '1 second');

    SELECT r.pid, r.backend_start, r.xact_start INTO s
    FROM vault.role_sessions() r
    WHERE r.pid = target AND r.backend_start = started AND r.xact_start IS NOT DISTINCT FROM in_transaction
      AND r.wait_event IS DISTINCT FROM 'SyncRep';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    holds := EXISTS (
        SELECT 1 FROM pg_catalog.pg_locks l
        WHERE l.pid = target AND l.granted AND l.database = here
          AND ((l.locktype = 'advisory' AND l.classid = 0 AND l.objsubid = 1
                AND l.objid::pg_catalog.int8 = ANY('{1635083380,1801812339}'::pg_catalog.int8[]))
               OR (l.locktype = 'relation' AND l.relation = 'vault.data_keys'::pg_catalog.regclass
                   AND l.mode <> 'AccessShareLock')));
    blocks := EXISTS (
        SELECT 1 FROM vault.role_sessions() w
        WHERE w.wait_event_type = 'Lock' AND target = ANY(pg_catalog.pg_blocking_pids(w.pid)));
    IF NOT (holds OR blocks) THEN
        RETURN NULL;
    END IF;

    IF coalesce(s.xact_start, s.backend_start) <= clock - held THEN
        why := CASE WHEN holds THEN 'held a watched lock' ELSE 'kept a member waiting' END
               || ' in a transaction (or session) begun ' || held::text || ' ago or more';
    ELSIF EXISTS (
        SELECT 1 FROM vault.role_sessions() w
        JOIN pg_catalog.pg_locks l ON l.pid = w.pid AND NOT l.granted
        WHERE w.wait_event_type = 'Lock' AND target = ANY(pg_catalog.pg_blocking_pids(w.pid))
          AND l.waitstart <= clock - waited) THEN
        why := 'kept a member waiting ' || waited::text || ' or more';
    ELSIF EXISTS (
        SELECT 1 FROM vault.role_sessions() w
        WHERE w.wait_event_type = 'Lock' AND target = ANY(pg_catalog.pg_blocking_pids(w.pid))
          AND w.xact_start <= clock - held
          AND EXISTS (
              SELECT 1 FROM pg_catalog.pg_locks k
              WHERE k.pid = w.pid AND k.granted AND k.database = here
                AND ((k.locktype = 'advisory' AND k.classid = 0 AND k.objsubid = 1
                      AND k.objid::pg_catalog.int8 = ANY('{1635083380,1801812339}'::pg_catalog.int8[]))
                     OR (k.locktype = 'relation' AND k.relation = 'vault.data_keys'::pg_catalog.regclass
                         AND k.mode <> 'AccessShareLock')))) THEN
        why := 'kept waiting a member that held a watched lock ' || held::text || ' or more';
    ELSE
        RETURN false;  -- under the watch's own bounds: not ended
    END IF;
    RAISE LOG 'vault.end_role_session: login % ended pid %: it %', session_user, target, why;
    RETURN pg_catalog.pg_terminate_backend(target);
END
$$;

REVOKE ALL ON FUNCTION vault.end_role_session(integer, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.end_role_session(integer, timestamptz, timestamptz) TO tokenvault_vault;

RESET ROLE;
