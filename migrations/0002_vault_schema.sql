-- The locked-down vault schema: tokens, ciphertext, wrapped keys and the audit log.
CREATE SCHEMA IF NOT EXISTS vault AUTHORIZATION tokenvault_owner;
REVOKE ALL ON SCHEMA vault FROM PUBLIC;
GRANT USAGE ON SCHEMA vault TO tokenvault_vault;

SET ROLE tokenvault_owner;

-- Data keys (DEKs and fingerprint keys), stored only wrapped by the Vault Transit KEK.
CREATE TABLE IF NOT EXISTS vault.data_keys (
    id          serial PRIMARY KEY,
    purpose     text NOT NULL CHECK (purpose IN ('encryption', 'fingerprint')),
    wrapped_key text NOT NULL,            -- Transit ciphertext, e.g. "vault:v1:..."
    kek_name    text NOT NULL,
    state       text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'decrypt_only', 'retired')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- At most one active key per purpose: replicas starting together agree on it.
CREATE UNIQUE INDEX IF NOT EXISTS data_keys_one_active ON vault.data_keys (purpose) WHERE state = 'active';

-- One row per issued token. `sealed` is nonce || AES-256-GCM ciphertext, bound to (type, token).
CREATE TABLE IF NOT EXISTS vault.tokens (
    token              text PRIMARY KEY,
    token_type         text NOT NULL,
    fingerprint        bytea NOT NULL,    -- HMAC-SHA256(fingerprint key, type || normalized value)
    fingerprint_key_id integer NOT NULL REFERENCES vault.data_keys (id),
    dek_id             integer NOT NULL REFERENCES vault.data_keys (id),
    sealed             bytea,             -- NULL once the value is erased
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_type_fingerprint ON vault.tokens (token_type, fingerprint);

-- Append-only, hash-chained audit log: who, when, why, how many, outcome. Never values.
CREATE TABLE IF NOT EXISTS vault.audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL,
    client      text NOT NULL,
    action      text NOT NULL,
    purpose     text NOT NULL DEFAULT '',
    token_types text NOT NULL DEFAULT '',
    item_count  integer NOT NULL,
    outcome     text NOT NULL,
    prev_hash   bytea NOT NULL,
    row_hash    bytea NOT NULL
);

RESET ROLE;

REVOKE ALL ON ALL TABLES IN SCHEMA vault FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA vault FROM PUBLIC;
GRANT SELECT, INSERT ON vault.data_keys TO tokenvault_vault;
GRANT UPDATE (wrapped_key, state) ON vault.data_keys TO tokenvault_vault;
GRANT SELECT, INSERT ON vault.tokens TO tokenvault_vault;
GRANT SELECT, INSERT ON vault.audit_log TO tokenvault_vault;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA vault TO tokenvault_vault;
