-- No login but a superuser may lock pg_catalog.pg_settings: PUBLIC's UPDATE on the view is revoked (attack 31, F3).
--
-- initdb grants SELECT and UPDATE on the pg_settings view to PUBLIC (UPDATE through the view is another way to
-- SET). LOCK TABLE in any mode above ACCESS SHARE needs UPDATE, DELETE or TRUNCATE, so every login - an
-- analyst's, the ETL's, the lock watchdog's, the serving role's - could `LOCK TABLE pg_catalog.pg_settings IN
-- ACCESS EXCLUSIVE MODE` and sit idle in its transaction: one entry of the lock table, which no watch looks at
-- (the vault's rules end members of tokenvault_vault only, the watchdog sessions over 256 entries only). Every
-- statement reading the view waited for it: the key jobs' liveness hold read it with no lock_timeout, so every
-- rotation, re-encryption and KEK retirement hung, before any audit row (2 of 2 rotations still blocked after
-- 30 s). The hold reads no relation now (key_job_liveness.py); this takes the lock itself away from every
-- non-superuser login, so nothing else reading the view (an analyst's tools, psql's \dconfig, monitoring) can
-- be stopped so either.
--
-- What is lost: `UPDATE pg_settings SET setting = ...` (nothing of the vault, the ETL or the watchdog does it).
-- SET, RESET, SHOW, set_config(), current_setting() and SELECT on the view work as before for every login: none
-- of them needs the view's UPDATE. A superuser may still lock it (and do anything else).
--
-- The view's ACL is per database: this revokes it in the vault's database only; no login of the vault's may
-- connect to another (0049). Only the view's owner - the bootstrap superuser - or another superuser may revoke
-- it: otherwise a WARNING says so (a managed PostgreSQL: its administrator revokes it, docs/production.md).
-- Re-runnable.
DO $$
BEGIN
    REVOKE UPDATE ON pg_catalog.pg_settings FROM PUBLIC;
    IF pg_catalog.has_table_privilege('public', 'pg_catalog.pg_settings', 'UPDATE') THEN
        RAISE WARNING 'every login may still lock pg_catalog.pg_settings in database %, and so stop every statement that reads it (attack 31, F3)',
            pg_catalog.current_database()
            USING HINT = 'As a superuser, in this database: REVOKE UPDATE ON pg_catalog.pg_settings FROM PUBLIC.';
    END IF;
END
$$;
