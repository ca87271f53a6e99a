# The vault pod's Vault agent (Kubernetes auth role tokenvault-vault-service; deploy/k8s/vault-service):
# what its templates render, and nothing the service itself uses. The service's own token comes from
# AppRole tokenvault-service (policy tokenvault-service.hcl: Transit only), whose ids the agent renders;
# so the service's process holds no token that may read database/creds/tokenvault-vault and mint logins
# of tokenvault_vault past the server's slots (attack 32, F7). No Transit here.
path "database/creds/tokenvault-vault" {
  capabilities = ["read"]
}
path "pki/issue/tokenvault-server" {
  capabilities = ["update"]
  allowed_parameters = {
    "common_name" = ["vault-service.tokenvault.svc"]
    "alt_names" = ["vault-service"]
  }
}
path "pki/issuer/default/json" {
  capabilities = ["read"]
}
path "pki/issuer/default/crl" {
  capabilities = ["read"]
}
path "pki-metrics/issue/tokenvault-metrics-server" {
  capabilities = ["update"]
  allowed_parameters = {
    "common_name" = ["vault-service.tokenvault.svc"]
  }
}
path "pki-metrics/cert/ca" {
  capabilities = ["read"]
}
path "auth/approle/role/tokenvault-service/role-id" {
  capabilities = ["read"]
}
path "auth/approle/role/tokenvault-service/secret-id" {
  capabilities = ["update"]
  allowed_parameters = {
    "ttl" = ["24h"]
  }
}
