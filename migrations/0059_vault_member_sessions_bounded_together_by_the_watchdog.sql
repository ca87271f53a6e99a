-- The sessions of every login IN ROLE tokenvault_vault together are held to the group's budget by the operators'
-- watchdog (attack 32, F7).
--
-- 0046 gave tokenvault_vault a CONNECTION LIMIT sized so that every login's limit fits the server's slots. In
-- Kubernetes the vault logs in as Vault-made logins IN ROLE tokenvault_vault (database/creds/tokenvault-vault), each
-- with its own CONNECTION LIMIT from Vault's creation statement, and PostgreSQL 15 has no limit per group: whoever
-- may read the creds path (the vault's Vault token) minted 7 logins, held 96 sessions, and every other login - the
-- ETL's, an analyst's, the watchdog's own new one - was refused ("remaining connection slots are reserved").
--
-- watchdog.end_vault_sessions_past_budget(budget): counts the client sessions, in every database (slots are the
-- server's), of the members of tokenvault_vault - but a superuser and the owner's members (the migrator), as 0057 -
-- and, past `budget` (NULL or under 1: tokenvault_vault's own CONNECTION LIMIT, 0046's; none when it has none),
-- ends the excess: the sessions of the most recently created login first (the highest role oid: Vault's newest
-- lease; a VALID UNTIL moves with each renewal, an oid does not), within a login its idle sessions first (not in a
-- transaction), then the newest. A login's session in a transaction holding the audit chain's lock (0045's
-- advisory lock 0x61756474: an append about to commit) is never ended; the next look ends another if still over.
-- Why the newest login first and not every login's idle sessions first: a minter whose sessions run a long
-- statement would otherwise have the vault's idle pool ended at every look, and keep the slots.
--
-- Returns one row per session it ended or that the server refused to end - pid, login, idle, ended - then one last
-- row with pid NULL: `sessions` the members' sessions it counted (before ending), `budget` the budget it held them
-- to (NULL: none). Never the statement or the client's address. PL/pgSQL and SECURITY DEFINER, as 0048's; it reads
-- pg_roles (the role's limit) only when no budget is given. The owner's pg_read_all_stats and pg_signal_backend
-- come from migration 0042.
SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION watchdog.end_vault_sessions_past_budget(budget integer)
RETURNS TABLE (pid integer, login text, idle boolean, ended boolean, sessions integer, held_to integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    vault oid := 'tokenvault_vault'::pg_catalog.regrole;
    allowed integer := budget;
    counted integer;
    excess integer;
    member record;
BEGIN
    IF allowed IS NULL OR allowed OPERATOR(pg_catalog.<) 1 THEN
        SELECT r.rolconnlimit INTO allowed FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) vault;
        IF allowed OPERATOR(pg_catalog.<) 0 THEN
            allowed := NULL;
        END IF;
    END IF;
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
