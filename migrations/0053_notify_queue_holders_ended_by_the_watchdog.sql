-- Sessions holding the NOTIFY queue's tail while it grows are ended by the operators' watchdog (review 35, R35-1).
--
-- LISTEN and NOTIFY need no privilege (no GRANT controls them), so every login can do it: `LISTEN q; BEGIN;
-- SELECT 1;` left idle in transaction holds the queue's tail (a backend reads its notifications only between
-- transactions), and a second session's `pg_notify('q', <8 KB>)` in a loop wrote 1.16 GB to $PGDATA/pg_notify in
-- 5 s: the data disk full, the ETL's writes DiskFull, the checkpointer PANICked and the server restarted. PG 15's
-- queue may reach 8 GB before NOTIFY is refused; temp_file_limit does not cover it; max_notify_queue_pages exists
-- only on PostgreSQL 17+. The vault and the ETL never LISTEN nor NOTIFY.
--
-- watchdog.end_notify_queue_holder(bound, before): reads pg_notification_queue_usage() (the queue's share of its
-- maximum, 8 GB on PG 15) and the server's clock; if the usage is over `bound` and `before` is given, ends the
-- oldest client session, of any database of the cluster (the queue is the cluster's), in a transaction that began
-- before `before` (the watchdog passes when it first saw the usage over the bound: the holder of the tail began
-- its transaction before the queue grew), of any login but a superuser, a member of tokenvault_owner and the
-- caller. At most one session per call: the watchdog ends the next only while the usage still grows. Returns one
-- row: the usage, the server's time, and the pid, login and whether ended of the session it ended (NULLs when
-- none). PostgreSQL lists no session's LISTEN registrations (pg_listening_channels() is one's own), so the holder
-- cannot be named: the oldest transactions go first. Reads no relation (as 0048's). The owner's
-- pg_read_all_stats and pg_signal_backend come from migration 0042.
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
            ORDER BY a.xact_start, a.pid
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
