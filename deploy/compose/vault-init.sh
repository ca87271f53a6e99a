#!/bin/sh
# One-shot: Transit engine, the KEK, least-privilege policies, AppRole for the vault service.
# Runs in the official Vault image against the `vault` service; idempotent.
set -eu
export VAULT_ADDR=http://vault:8200 VAULT_TOKEN="$VAULT_ROOT_TOKEN"
vault secrets list | grep -q '^transit/' || vault secrets enable transit
vault read transit/keys/tokenvault >/dev/null 2>&1 || vault write -f transit/keys/tokenvault type=aes256-gcm96
vault policy write tokenvault-service /policies/tokenvault-service.hcl
vault policy write tokenvault-security /policies/tokenvault-security.hcl
vault auth list | grep -q '^approle/' || vault auth enable approle
vault write auth/approle/role/tokenvault-service token_policies=tokenvault-service token_ttl=24h token_max_ttl=720h
vault write auth/approle/role/tokenvault-service/role-id role_id="$VAULT_SERVICE_ROLE_ID"
# The secret id is handed over through a volume, never baked into an image.
vault write -field=secret_id -f auth/approle/role/tokenvault-service/secret-id > /vault-creds/secret-id
chown 10001 /vault-creds/secret-id && chmod 400 /vault-creds/secret-id
echo "vault initialised"
