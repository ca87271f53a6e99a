-- Key rotation, re-indexing and erasure.
--
-- * A fingerprint key can be `pending`: replicas write fingerprints under it too (column
--   next_fingerprint) while the re-index job fills it in for older rows; then it becomes active.
-- * The service may re-seal a value (re-encryption job), move its fingerprint (re-index) and
--   erase it (GDPR). It still can never change a token, its type, or delete a row.
SET ROLE tokenvault_owner;

ALTER TABLE vault.data_keys DROP CONSTRAINT IF EXISTS data_keys_state_check;
ALTER TABLE vault.data_keys ADD CONSTRAINT data_keys_state_check
    CHECK (state IN ('pending', 'active', 'decrypt_only', 'retired'));
CREATE UNIQUE INDEX IF NOT EXISTS data_keys_one_pending ON vault.data_keys (purpose) WHERE state = 'pending';
ALTER TABLE vault.data_keys ADD COLUMN IF NOT EXISTS retired_at timestamptz;

ALTER TABLE vault.tokens ALTER COLUMN fingerprint DROP NOT NULL;   -- NULL once erased
ALTER TABLE vault.tokens ADD COLUMN IF NOT EXISTS next_fingerprint bytea;  -- under the pending key
ALTER TABLE vault.tokens ADD COLUMN IF NOT EXISTS erased_at timestamptz;
CREATE UNIQUE INDEX IF NOT EXISTS tokens_type_next_fingerprint ON vault.tokens (token_type, next_fingerprint)
    WHERE next_fingerprint IS NOT NULL;
-- Key ids are checked by the writers under the key-generation lock (see adapters/postgres.py);
-- per-row foreign-key triggers cost 40 % of the insert time of new tokens, so they go.
ALTER TABLE vault.tokens DROP CONSTRAINT IF EXISTS tokens_fingerprint_key_id_fkey;
ALTER TABLE vault.tokens DROP CONSTRAINT IF EXISTS tokens_dek_id_fkey;
-- Work lists of the re-encryption and re-index jobs.
CREATE INDEX IF NOT EXISTS tokens_dek ON vault.tokens (dek_id) WHERE sealed IS NOT NULL;
CREATE INDEX IF NOT EXISTS tokens_fingerprint_key ON vault.tokens (fingerprint_key_id) WHERE fingerprint IS NOT NULL;

-- The audit log is append-only even for roles that could otherwise change it.
CREATE OR REPLACE FUNCTION vault.audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'vault.audit_log is append-only';
END
$$;
DROP TRIGGER IF EXISTS audit_log_append_only ON vault.audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON vault.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION vault.audit_log_append_only();

RESET ROLE;

REVOKE ALL ON FUNCTION vault.audit_log_append_only() FROM PUBLIC;
GRANT UPDATE (sealed, dek_id, fingerprint, fingerprint_key_id, next_fingerprint, erased_at)
    ON vault.tokens TO tokenvault_vault;
GRANT UPDATE (retired_at) ON vault.data_keys TO tokenvault_vault;
