# Kubernetes: the operators' lock watchdog's Vault agent (Kubernetes auth role tokenvault-lock-watchdog, service
# account lock-watchdog) renders its secrets (deploy/k8s/lock-watchdog/deployment.yaml) and nothing else:
# - dynamic Postgres credentials of database role tokenvault-watchdog (a login IN ROLE tokenvault_watchdog,
#   CONNECTION LIMIT 3, migration 0048);
# - its metrics endpoint's server certificate (pki-metrics, whose server role issues no client certificate: it cannot
#   become the metrics scraper and read the vault's counters), for lock-watchdog.tokenvault.svc only, and the metrics
#   CA (the scraper's), as the vault's and the ETL's agents do.
# No other database role's credentials, no gRPC PKI, no Transit.
path "database/creds/tokenvault-watchdog" {
  capabilities = ["read"]
}
path "pki-metrics/issue/tokenvault-metrics-server" {
  capabilities = ["update"]
  allowed_parameters = {
    "common_name" = ["lock-watchdog.tokenvault.svc"]
  }
}
path "pki-metrics/cert/ca" {
  capabilities = ["read"]
}
