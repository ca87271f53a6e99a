-- The lock watch sees and ends sessions of every login of the serving role, through the owner (review 33, R33-6).
--
-- The audit upkeep's lock watch (vault_service/adapters/postgres/chain_lock.py) ends sessions of the
-- serving role that hold the audit chain's lock, the key-generation lock or key rows for seconds, or keep
-- the vault's sessions waiting. It read pg_stat_activity and called pg_terminate_backend as the vault's
-- own login: that sees the transaction of, and may signal, only sessions of roles it has the privileges
-- of - its own login. The shipped Kubernetes deployment logs every vault pod (and the admin Job) in as a
-- user Vault's database engine makes `IN ROLE tokenvault_vault`, one per pod, and so is anyone who gets
-- the role's credentials the way the design hands them out: the watch could neither see such a session's
-- transaction nor end it (measured: a login made so that inserted one audit row and stayed idle froze
-- every reveal, 0 of 7 over 20 s, and was never ended).
--
-- Two functions of the owner, SECURITY DEFINER, search_path pinned, EXECUTE for tokenvault_vault only
-- (so for each of its logins; never the ETL's, the analysts', PUBLIC):
--
-- vault.role_sessions(): the sessions, in this database, of logins that are members of tokenvault_vault
--   (the role itself included; a superuser never, though PostgreSQL counts superusers members of every
--   role; the caller's own session never): pid, session start, transaction start, state, wait, state
--   change. Never the statement, the login's name or its address.
-- vault.end_role_session(pid, backend_start, xact_start): ends such a session only if it is still that
--   session (pid and session start) in that transaction (its start; NULL: outside any transaction), is
--   not waiting for a synchronous standby to confirm its commit (SyncRep: the standby is the fault), and
--   still holds a lock the watch looks at (the audit chain's or the key-generation advisory lock, in
--   either form, or a lock but a plain read's on vault.data_keys) or keeps a session of such a login
--   waiting for a lock. True: ended; false: the server did not end it; NULL: no such session (it let go,
--   left its transaction, or is not a member's). So a login of the role may not end, through it, a
--   session of the ETL, the owner, an analyst, a superuser, itself, nor a member's session that holds
--   nothing and keeps no one waiting (a replica's idle pool connection).
--
-- The owner needs to see and signal those sessions: pg_read_all_stats and pg_signal_backend (neither
-- reaches a superuser's session). Granted here when the migrator may grant them (a superuser: the
-- embedded stack, compose); on a managed PostgreSQL the migrator gets a WARNING and the provider's
-- equivalent must be granted to tokenvault_owner (docs/production.md). Without them the functions list
-- the sessions with no transaction (the watch says so, loudly, once per round) and refuse to end them.
-- What the grant gives: a member of tokenvault_owner (the migrator) may end any non-superuser session
-- of the cluster and read every session's activity; the functions end members' sessions only.
DO $$
BEGIN
    GRANT pg_read_all_stats, pg_signal_backend TO tokenvault_owner;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'could not grant pg_read_all_stats and pg_signal_backend to tokenvault_owner (%): the lock watch '
        'cannot see or end sessions of other logins of tokenvault_vault; grant them or the provider''s equivalent '
        '(docs/production.md)', SQLERRM;
END
$$;

SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION vault.role_sessions()
RETURNS TABLE (pid integer, backend_start timestamptz, xact_start timestamptz, state text,
               wait_event_type text, wait_event text, state_change timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.pid, a.backend_start, a.xact_start, a.state, a.wait_event_type, a.wait_event, a.state_change
    FROM pg_catalog.pg_stat_activity a
    JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) a.usesysid
    WHERE a.datid OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                           WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
      AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
      AND NOT r.rolsuper
      AND pg_catalog.pg_has_role(r.oid, 'tokenvault_vault', 'MEMBER')
$$;

CREATE OR REPLACE FUNCTION vault.end_role_session(target integer, started timestamptz, in_transaction timestamptz)
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.pg_terminate_backend(s.pid)
    FROM vault.role_sessions() s
    WHERE s.pid OPERATOR(pg_catalog.=) target
      AND s.backend_start OPERATOR(pg_catalog.=) started
      AND s.xact_start IS NOT DISTINCT FROM in_transaction
      AND s.wait_event IS DISTINCT FROM 'SyncRep'
      AND (EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                   WHERE l.pid OPERATOR(pg_catalog.=) s.pid AND l.granted
                     AND l.database OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                                            WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
                     AND ((l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.classid OPERATOR(pg_catalog.=) 0
                           AND l.objsubid OPERATOR(pg_catalog.=) 1
                           AND l.objid::pg_catalog.int8 OPERATOR(pg_catalog.=) ANY('{1635083380,1801812339}'::pg_catalog.int8[]))
                          OR (l.locktype OPERATOR(pg_catalog.=) 'relation'
                              AND l.relation OPERATOR(pg_catalog.=) 'vault.data_keys'::pg_catalog.regclass
                              AND l.mode OPERATOR(pg_catalog.<>) 'AccessShareLock')))
           OR EXISTS (SELECT 1 FROM vault.role_sessions() w
                      WHERE w.wait_event_type OPERATOR(pg_catalog.=) 'Lock'
                        AND s.pid OPERATOR(pg_catalog.=) ANY(pg_catalog.pg_blocking_pids(w.pid))))
$$;

REVOKE ALL ON FUNCTION vault.role_sessions() FROM PUBLIC;
REVOKE ALL ON FUNCTION vault.end_role_session(integer, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.role_sessions() TO tokenvault_vault;
GRANT EXECUTE ON FUNCTION vault.end_role_session(integer, timestamptz, timestamptz) TO tokenvault_vault;

RESET ROLE;
