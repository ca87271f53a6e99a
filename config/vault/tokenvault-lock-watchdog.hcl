# Kubernetes: the operators' lock watchdog's Vault agent (Kubernetes auth role tokenvault-lock-watchdog, service
# account lock-watchdog) renders its one secret (deploy/k8s/lock-watchdog/deployment.yaml): dynamic Postgres
# credentials of database role tokenvault-watchdog (a login IN ROLE tokenvault_watchdog, CONNECTION LIMIT 3,
# migration 0048). Nothing else: no other database role's credentials, no PKI, no Transit.
path "database/creds/tokenvault-watchdog" {
  capabilities = ["read"]
}
