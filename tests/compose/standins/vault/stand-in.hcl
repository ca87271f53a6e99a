# TEST FIXTURE: what makes OpenBao honour the Vault API that deploy/compose/vault-init.sh uses.
# OpenBao refuses to enable audit devices through the API (sys/audit) unless told it may;
# HashiCorp Vault 1.17 allows it. Loaded beside the compose file's server.hcl from /vault/config.
unsafe_allow_api_audit_creation = true
