-- No login but a superuser writes exported-snapshot files or WAL messages in the vault's database (attack 32, F3).
--
-- pg_export_snapshot() is PUBLIC's: each call writes a file in $PGDATA/pg_snapshots (one 4 KB block and one
-- inode) that stays until the caller's transaction ends. Outside temp_file_limit, the lock-hog rule and the
-- NOTIFY rule: an analyst's, the ETL's or the watchdog's login wrote 91,728 of them in 1.4 s in one idle
-- transaction and filled a 400 MB data volume (the ETL's inserts: DiskFull, 3 of 3); with ~301 bytes of backend
-- memory each, one session under its 1 GiB address-space bound holds ~3.5 million (~14 GB, or the inodes of a
-- whole file system). pg_logical_emit_message() is PUBLIC's too: a "read-only" analyst wrote 500 MB of WAL in
-- 1.2 s (measured on PostgreSQL 15), which max_wal_size recycles only when nothing keeps it - a WAL archive or a
-- standby's replication slot keeps every byte. Neither is used by the vault, the ETL, the watchdog or the
-- analysts' reads: both are revoked from PUBLIC in this database. (pg_dump's parallel mode exports snapshots:
-- a dump role that is no superuser needs `GRANT EXECUTE ON FUNCTION pg_catalog.pg_export_snapshot() TO ...`.)
--
-- Function ACLs are per database; no login of the vault's may connect to another (0049). Only a superuser may
-- revoke them: otherwise a WARNING says so (a managed PostgreSQL: its administrator revokes them,
-- docs/production.md). Re-runnable.
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pg_catalog' AND p.proname IN ('pg_export_snapshot', 'pg_logical_emit_message')
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
        IF pg_catalog.has_function_privilege('public', fn, 'EXECUTE') THEN
            RAISE WARNING 'every role may still execute % in database %: run this migration as a superuser (attack 32, F3)',
                fn, pg_catalog.current_database();
        END IF;
    END LOOP;
END
$$;
