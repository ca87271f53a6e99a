-- vault.tokens holds rows of the types the vault makes, and nothing else (review 26, R26-3; review 27, R27-4).
--
-- The serving role holds INSERT on vault.tokens, and token_type had no CHECK: a row of type
-- 'bogus' inserted with the service's credentials stopped `reencrypt` and `reindex` ("unknown token
-- type") and, once re-sealed, `retire-kek-versions`, every run, until the database owner deleted it
-- (docs/key-rotation.md); the role could plant it again at will. The constraint below refuses it.
--
-- The known types are vault_service/domain/token_types.py's TokenType (a unit test keeps the two
-- lists equal). Adding a type is a migration that replaces this constraint.
--
-- On a live table: ADD CONSTRAINT ... NOT VALID takes an ACCESS EXCLUSIVE lock on vault.tokens
-- and scans nothing; VALIDATE CONSTRAINT then reads every row. The migrator applies a file in one
-- transaction, so the ACCESS EXCLUSIVE lock is held until the scan ends and the file commits:
-- Tokenize, Detokenize and Erase wait for that long (measured: docs/scaling.md, "Migration 0033").
-- A lock_timeout bounds the wait for the lock itself, so the migration never queues behind a long
-- transaction while every call queues behind it; it then fails and can simply be run again.
--
-- A row of an unknown type already there makes VALIDATE fail; the migration then stops with a
-- message saying how many such rows there are and what to do (the runbook's remedy), never skips.
SET ROLE tokenvault_owner;

DO $$
DECLARE
    unknown bigint;
    previous_lock_timeout text := current_setting('lock_timeout');
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'vault.tokens'::regclass AND conname = 'tokens_known_type' AND convalidated) THEN
        RETURN;
    END IF;
    PERFORM set_config('lock_timeout', '10s', true);
    ALTER TABLE vault.tokens DROP CONSTRAINT IF EXISTS tokens_known_type;
    ALTER TABLE vault.tokens ADD CONSTRAINT tokens_known_type CHECK (token_type IN ('ip', 'device_id')) NOT VALID;
    BEGIN
        ALTER TABLE vault.tokens VALIDATE CONSTRAINT tokens_known_type;
    EXCEPTION WHEN check_violation THEN
        SELECT count(*) INTO unknown FROM vault.tokens WHERE token_type NOT IN ('ip', 'device_id');
        RAISE EXCEPTION 'migration 0033 stopped: vault.tokens holds % row(s) of a token type the vault never makes'
                        ' (known: ip, device_id); nothing was changed', unknown
            USING ERRCODE = 'check_violation',
                  DETAIL = 'such a row was inserted with the serving role''s credentials (its issue audit row names'
                           ' the session); it stops reencrypt and reindex until it is deleted',
                  HINT = 'investigate, then as the database owner delete those rows and their kept copies'
                         ' (docs/key-rotation.md, "unknown token type"): SELECT token, token_type FROM vault.tokens'
                         ' WHERE token_type NOT IN (''ip'', ''device_id''); then run the migrations again';
    END;
    PERFORM set_config('lock_timeout', previous_lock_timeout, true);
END
$$;

RESET ROLE;
