# The security team: rotates the KEK and retires old versions (min_decryption_version /
# min_encryption_version), and rotates the audit signing key and the ETL's row-signing key.
# Nothing else: it cannot decrypt, make data keys, sign, export, back up, trim or delete a key, and it cannot make the KEK
# exportable, backed up in plaintext or deletable - allowed_parameters refuses a config write
# that carries any other parameter (each alone or mixed with an allowed one), with 403.
# Transit cannot express "only upwards": lowering min_decryption_version again is possible
# until `trim` (which this policy does not allow) removes the old versions.
path "transit/keys/tokenvault/rotate" {
  capabilities = ["update"]
}
path "transit/keys/tokenvault/config" {
  capabilities = ["update"]
  allowed_parameters = {
    "min_decryption_version" = []
    "min_encryption_version" = []
  }
}
path "transit/keys/tokenvault" {
  capabilities = ["read"]
}
# The audit signing key (ed25519): rotate it and read its public keys, nothing more.
path "transit/keys/tokenvault-audit/rotate" {
  capabilities = ["update"]
}
path "transit/keys/tokenvault-audit" {
  capabilities = ["read"]
}
# The ETL's row-signing key (ed25519, not exportable): rotate it and read its public keys, which
# `tokenvault login-row-keys refresh` writes to the file erase and reveal --verify-rows verify with.
path "transit/keys/tokenvault-login-rows/rotate" {
  capabilities = ["update"]
}
path "transit/keys/tokenvault-login-rows" {
  capabilities = ["read"]
}
