-- The NOTIFY queue rule ends other logins' sessions before the ETL's, and the vault's last (R35-1, its order).
--
-- 0053's watchdog.end_notify_queue_holder() ended the OLDEST transaction's session first, of any non-exempt login
-- (PostgreSQL cannot say which session LISTENs). So an insider with an analyst's login could have the watchdog end
-- the vault's or the ETL's sessions on demand: start a NOTIFY fill while a vault key job's hold (a long transaction
-- of a tokenvault_vault member login) or an ETL batch is older than the insider's listener - the service's session
-- was ended first (the key job failed), the listener only at a later look.
--
-- Now the candidates (same ones: a client session in a transaction begun before `before`, of any login but a
-- superuser, a member of tokenvault_owner and the caller; any database) are taken in this order:
--   1. sessions of logins that are members of neither tokenvault_vault nor tokenvault_etl (analysts, anyone else),
--      oldest transaction first;
--   2. then the ETL's (members of tokenvault_etl), oldest first;
--   3. the vault's (members of tokenvault_vault; a login of both counts as the vault's) last, oldest first.
-- Everything else as 0053: at most one session per call (the watchdog ends the next only while the usage still
-- grows), the same row returned, reads no relation. The vault and the ETL never LISTEN nor NOTIFY, so their
-- sessions are reached only when no other login's transaction older than the growth is left, i.e. when the holder
-- is one of theirs (a bug) or holds their credentials.
-- Left: an insider holding the ETL's or the vault's own credentials (a login that is a member of that group) still
-- can make the rule end that service's older sessions first - its listener sorts with them.
SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION watchdog.end_notify_queue_holder(bound double precision, before timestamptz)
RETURNS TABLE (usage double precision, at timestamptz, pid integer, login text, ended boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    holder record;
BEGIN
    usage := pg_catalog.pg_notification_queue_usage();
    at := pg_catalog.clock_timestamp();
    IF usage OPERATOR(pg_catalog.>) bound AND before IS NOT NULL THEN
        FOR holder IN
            SELECT a.pid, a.usesysid
            FROM pg_catalog.pg_stat_get_activity(NULL) a
            WHERE a.xact_start OPERATOR(pg_catalog.<) before
              AND a.usesysid IS NOT NULL
              AND a.backend_type OPERATOR(pg_catalog.=) 'client backend'
              AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
            ORDER BY
                -- other logins (analysts, anyone) first, then the ETL's, the vault's last
                CASE
                    WHEN pg_catalog.pg_has_role(a.usesysid, 'tokenvault_vault', 'MEMBER') THEN 2
                    WHEN pg_catalog.pg_has_role(a.usesysid, 'tokenvault_etl', 'MEMBER') THEN 1
                    ELSE 0
                END,
                a.xact_start, a.pid
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
            EXIT;
        END LOOP;
    END IF;
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION watchdog.end_notify_queue_holder(double precision, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION watchdog.end_notify_queue_holder(double precision, timestamptz) TO tokenvault_watchdog;

RESET ROLE;
