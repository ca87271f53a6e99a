# Kubernetes: the ETL pod's Vault agent (Kubernetes auth role tokenvault-etl-service) renders
# the pod's secrets (deploy/k8s/etl-service/deployment.yaml) and nothing else:
# - dynamic Postgres credentials of role tokenvault_etl;
# - a client certificate whose CN can only be etl-service (no other client's identity);
# - the CA certificate;
# - the metrics endpoint's server certificate (pki-metrics, whose server role issues no client
#   certificate: the ETL cannot become the metrics scraper and read the vault's counters) and
#   the metrics CA;
# - for sealing dead letters, the ETL's own AppRole (tokenvault-etl.hcl: encrypt, rewrap and verify
#   with the dead-letter key, hmac and verify with its take-back key, sign with its row-signing key
#   tokenvault-login-rows, nothing else): its role id,
#   and fresh secret ids of a day each - the agent is the trusted broker that hands them to the
#   ETL. It cannot touch any other role.
# It cannot use Transit itself: no encrypt, decrypt or key access.
path "database/creds/tokenvault-etl" {
  capabilities = ["read"]
}
path "pki/issue/tokenvault-clients" {
  capabilities = ["update"]
  allowed_parameters = {
    "common_name" = ["etl-service"]
  }
}
path "pki/cert/ca" {
  capabilities = ["read"]
}
path "pki-metrics/issue/tokenvault-metrics-server" {
  capabilities = ["update"]
  allowed_parameters = {
    "common_name" = ["etl-service.tokenvault.svc"]
  }
}
path "pki-metrics/cert/ca" {
  capabilities = ["read"]
}
path "auth/approle/role/tokenvault-etl/role-id" {
  capabilities = ["read"]
}
path "auth/approle/role/tokenvault-etl/secret-id" {
  capabilities = ["update"]
  allowed_parameters = {
    "ttl" = ["24h"]
  }
}
