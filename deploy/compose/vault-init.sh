#!/bin/sh
# One-shot, on every `docker compose up`: initialise Vault on first start (raft storage), unseal
# it, then the audit device, Transit engine, the KEK, the audit signing key, least-privilege
# policies, AppRole for the vault service.
# Runs in the Vault image against the `vault` service; idempotent.
#
# DEV-GRADE UNSEAL: the single unseal key share and the initial root token are kept in the
# `vault-unseal` volume, mounted only into this job. Anyone who can read that volume (root on the
# Docker host) holds every key. Production uses auto-unseal (cloud KMS / HSM) and revokes the root token.
set -eu
export VAULT_ADDR=http://vault:8200
UNSEAL_DIR=/vault-unseal
umask 077

if vault status -format=json 2>/dev/null | grep -q '"initialized": false'; then
  vault operator init -key-shares=1 -key-threshold=1 > "$UNSEAL_DIR/init.txt"
  awk '/^Unseal Key 1:/ {print $NF}' "$UNSEAL_DIR/init.txt" > "$UNSEAL_DIR/unseal-key"
  awk '/^Initial Root Token:/ {print $NF}' "$UNSEAL_DIR/init.txt" > "$UNSEAL_DIR/root-token"
  rm "$UNSEAL_DIR/init.txt"
  echo "vault initialised (raft storage); unseal material in the vault-unseal volume"
fi
if [ ! -s "$UNSEAL_DIR/unseal-key" ] || [ ! -s "$UNSEAL_DIR/root-token" ]; then
  echo "vault-init: Vault is initialised but $UNSEAL_DIR holds no unseal key or root token." >&2
  echo "  Was the vault-unseal volume removed without vault-data? Remove both (docker compose down -v) to start afresh." >&2
  exit 1
fi
if vault status -format=json 2>/dev/null | grep -q '"sealed": true'; then
  vault operator unseal "$(cat "$UNSEAL_DIR/unseal-key")" >/dev/null
  echo "vault unsealed"
fi
VAULT_TOKEN="$(cat "$UNSEAL_DIR/root-token")"
export VAULT_TOKEN
# After unsealing, raft elects its leader; wait until requests are served.
tries=0
until vault token lookup >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then echo "vault-init: Vault did not become active within 60 s" >&2; exit 1; fi
  sleep 1
done

# Every request and response (secrets HMAC-ed) to a file in the vault-audit volume, which the vault container
# alone mounts: kept across `down`/`up` as the raft data is, erased by `down -v` (walk49, W49-7).
vault audit list 2>/dev/null | grep -q '^file/' || vault audit enable file file_path=/vault/logs/audit.log
vault secrets list | grep -q '^transit/' || vault secrets enable transit
vault read transit/keys/tokenvault >/dev/null 2>&1 || vault write -f transit/keys/tokenvault type=aes256-gcm96
# Signs the audit trail's checkpoints; the service may only sign, anyone may verify offline.
vault read transit/keys/tokenvault-audit >/dev/null 2>&1 || vault write transit/keys/tokenvault-audit type=ed25519 exportable=false
vault policy write tokenvault-service /policies/tokenvault-service.hcl
vault policy write tokenvault-security /policies/tokenvault-security.hcl
vault auth list | grep -q '^approle/' || vault auth enable approle
# Every `up` hands out new secret ids; the ones handed out before are destroyed, so a copy taken
# from an earlier volume stops working (the services read the file again at each login).
forget_secret_ids() {
  accessors=$(vault list -format=json "auth/approle/role/$1/secret-id" 2>/dev/null | tr -d '[]{}", ' | grep . || true)
  for accessor in $accessors; do
    vault write "auth/approle/role/$1/secret-id-accessor/destroy" secret_id_accessor="$accessor" >/dev/null
  done
}
# The service renews its 1 h token and logs in again (one secret id use) once per 24 h; the
# secret id expires after 30 days or 100 logins (docs/production.md). Not bound to a CIDR:
# compose gives the vault service an address from a network it allocates itself.
vault write auth/approle/role/tokenvault-service token_policies=tokenvault-service token_ttl=1h token_max_ttl=24h \
  secret_id_ttl=720h secret_id_num_uses=100
vault write auth/approle/role/tokenvault-service/role-id role_id="$VAULT_SERVICE_ROLE_ID"
# The secret id is handed over through a volume, never baked into an image.
forget_secret_ids tokenvault-service
# Each secret id goes into a volume that only its service mounts (and this job).
vault write -field=secret_id -f auth/approle/role/tokenvault-service/secret-id > /vault-creds/vault-service/secret-id
chown 10001 /vault-creds/vault-service/secret-id && chmod 400 /vault-creds/vault-service/secret-id
# The ETL seals dead-letter bodies with a key of its own: it may encrypt and rewrap, never decrypt
# (an operator token with tokenvault-dlq-operator may, and the audit device records it).
vault read transit/keys/tokenvault-dead-letters >/dev/null 2>&1 || vault write -f transit/keys/tokenvault-dead-letters type=aes256-gcm96
# The ETL's own HMAC-only key: it tags the SentTimestamp SQS kept on a message its take-back sends
# back from the DLQ, so the event loads under its own date; only the ETL may hmac with it.
vault read transit/keys/tokenvault-take-back-times >/dev/null 2>&1 || vault write -f transit/keys/tokenvault-take-back-times type=hmac key_size=32
# The ETL's own signing key: it signs, per load batch, the digests of the rows it loads into user_logins
# (attack 41, A41-1); not exportable. Its public keys (a read shows nothing else) go to the privacy
# officer's container, whose `tokenvault erase` verifies the rows offline; written again at each `up`
# (after a rotation of the key, `docker compose up --no-deps vault-init`: docs/key-rotation.md, step 8).
vault read transit/keys/tokenvault-login-rows >/dev/null 2>&1 || vault write transit/keys/tokenvault-login-rows type=ed25519 exportable=false
vault read -format=json transit/keys/tokenvault-login-rows > /login-row-keys/login-row-keys.json.new
chmod 444 /login-row-keys/login-row-keys.json.new && mv /login-row-keys/login-row-keys.json.new /login-row-keys/login-row-keys.json
vault policy write tokenvault-etl /policies/tokenvault-etl.hcl
vault policy write tokenvault-dlq-operator /policies/tokenvault-dlq-operator.hcl
vault write auth/approle/role/tokenvault-etl token_policies=tokenvault-etl token_ttl=1h token_max_ttl=24h secret_id_ttl=720h
vault write auth/approle/role/tokenvault-etl/role-id role_id="$VAULT_ETL_ROLE_ID"
forget_secret_ids tokenvault-etl
vault write -field=secret_id -f auth/approle/role/tokenvault-etl/secret-id > /vault-creds/etl-service/etl-secret-id
chown 10002 /vault-creds/etl-service/etl-secret-id && chmod 400 /vault-creds/etl-service/etl-secret-id  # the ETL's uid
echo "vault initialised"
