#!/bin/sh
# One-shot: audit device, Transit engine, the KEK, the audit signing key, least-privilege
# policies, AppRole for the vault service.
# Runs in the official Vault image against the `vault` service; idempotent.
set -eu
export VAULT_ADDR=http://vault:8200 VAULT_TOKEN="$VAULT_ROOT_TOKEN"
# Every request and response (secrets HMAC-ed) to a file in the vault container.
vault audit list 2>/dev/null | grep -q '^file/' || vault audit enable file file_path=/vault/logs/audit.log
vault secrets list | grep -q '^transit/' || vault secrets enable transit
vault read transit/keys/tokenvault >/dev/null 2>&1 || vault write -f transit/keys/tokenvault type=aes256-gcm96
# Signs the audit trail's checkpoints; the service may only sign, anyone may verify offline.
vault read transit/keys/tokenvault-audit >/dev/null 2>&1 || vault write transit/keys/tokenvault-audit type=ed25519 exportable=false
vault policy write tokenvault-service /policies/tokenvault-service.hcl
vault policy write tokenvault-security /policies/tokenvault-security.hcl
vault auth list | grep -q '^approle/' || vault auth enable approle
# The service renews its 1 h token and logs in again (one secret id use) once per 24 h; the
# secret id expires after 30 days or 100 logins (docs/production.md). Not bound to a CIDR:
# compose gives the vault service an address from a network it allocates itself.
vault write auth/approle/role/tokenvault-service token_policies=tokenvault-service token_ttl=1h token_max_ttl=24h \
  secret_id_ttl=720h secret_id_num_uses=100
vault write auth/approle/role/tokenvault-service/role-id role_id="$VAULT_SERVICE_ROLE_ID"
# The secret id is handed over through a volume, never baked into an image.
vault write -field=secret_id -f auth/approle/role/tokenvault-service/secret-id > /vault-creds/secret-id
chown 10001 /vault-creds/secret-id && chmod 400 /vault-creds/secret-id
echo "vault initialised"
