-- The NOTIFY queue rule's candidates are every other login's and the ETL's sessions in a transaction, not only those
-- begun before the queue passed its bound (attack 32, F1).
--
-- 0053/0054 ended only sessions in a transaction begun before `before` (the look at which the watchdog first saw the
-- usage over the bound), so as not to end transactions that could not hold the queue's tail: the holder at that
-- moment had begun holding before the queue grew. But the tail moves: once that holder is ended it goes to the next
-- listener's position, and a listener that kept reading until after the crossing, then began a transaction (or
-- stopped reading its socket), holds it from a position already more than the bound behind the head. Measured with
-- two listeners of one analyst's (or the ETL's) login: the first was ended, the second never was (its transaction
-- began after `before`), the usage never fell under the bound again, the queue grew to the test's 96 MB cap, and the
-- rule instead ended the VAULT's session in a transaction older than the crossing (a key job's hold).
--
-- Now the candidates (a client session of any database, of any login but a superuser, a member of tokenvault_owner
-- and the caller) are:
--   1. sessions of logins that are members of neither tokenvault_vault nor tokenvault_etl (analysts, anyone else)
--      in a transaction begun at ANY time (xact_start set), oldest transaction first;
--   2. then the ETL's (members of tokenvault_etl), in a transaction begun at any time, oldest first;
--   3. the vault's (members of tokenvault_vault; a login of both counts as the vault's) last, and only those in a
--      transaction begun before `before`, oldest first (as 0054).
-- Any session that holds the tail past the bound is in a transaction: its own (LISTEN; BEGIN), or the one a backend
-- runs while it sends its notifications to its client - one whose client does not read its socket blocks in that
-- send (wait_event ClientWrite, state "idle", xact_start = its last statement's start) and its queue position moves
-- only when the send is done: measured, it held the tail to the test's 64 MB cap. So every holder is a candidate,
-- and oldest-first within a category reaches the holder of the oldest position first. The order of 0054 holds for
-- every candidate: no vault session is ended while any other login's or the ETL's transaction is open, whenever it
-- began. The vault keeps 0054's horizon: it never LISTENs, so its sessions hold the tail only if someone holds the
-- vault's credentials; ending its transactions begun after the crossing would end every new vault call, one per look
-- while the queue grows, when the holder is one the rule may not end (a superuser's), for nothing.
-- The watchdog (NotifyQueueWatch) still passes `before` = its first look over the bound, ends at most one session
-- per look, and the next one only once the usage has risen a few pages above its lowest since the last end (the
-- tail, moved to the next holder, is still held), not above its value at the last end (which a relay could ratchet
-- up step by step).
-- Left: an insider holding the vault's own credentials can relay listeners of that login past the rule (0054's
-- "left"); innocent analysts' or ETL transactions older than the holder are still ended first (no SQL lists who
-- LISTENs).
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
            -- other logins' and the ETL's at any age; the vault's only if older than the crossing
            WHERE c.category OPERATOR(pg_catalog.<) 2 OR c.xact_start OPERATOR(pg_catalog.<) before
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
            EXIT;
        END LOOP;
    END IF;
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION watchdog.end_notify_queue_holder(double precision, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION watchdog.end_notify_queue_holder(double precision, timestamptz) TO tokenvault_watchdog;

RESET ROLE;
