-- Roles. Passwords are not set here: whoever deploys sets them (the embedded stack generates
-- throwaway ones at run time; compose and Kubernetes take them from their secret stores).
DO $$
BEGIN
    -- Owns schema vault and its tables; nobody logs in as it.
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tokenvault_owner') THEN
        CREATE ROLE tokenvault_owner NOLOGIN;
    END IF;
    -- The vault service: reads and appends to the vault tables, nothing else.
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tokenvault_vault') THEN
        CREATE ROLE tokenvault_vault LOGIN;
    END IF;
    -- The ETL: appends to user_logins and the quarantine; no privilege on schema vault.
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tokenvault_etl') THEN
        CREATE ROLE tokenvault_etl LOGIN;
    END IF;
    -- Analysts: read user_logins (tokens only); grant it to people's roles.
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tokenvault_analyst') THEN
        CREATE ROLE tokenvault_analyst NOLOGIN;
    END IF;
END
$$;
