# The vault service: may make, unwrap and rewrap data keys under the KEK, and read the
# KEK's metadata (latest version). It cannot rotate, configure, export or delete the KEK.
path "transit/datakey/plaintext/tokenvault" {
  capabilities = ["update"]
}
path "transit/decrypt/tokenvault" {
  capabilities = ["update"]
}
path "transit/rewrap/tokenvault" {
  capabilities = ["update"]
}
path "transit/keys/tokenvault" {
  capabilities = ["read"]
}
# The audit signing key (ed25519, not exportable): sign audit checkpoints and read the public
# keys. It cannot create, rotate, configure, export or delete the key, nor verify through Vault
# (verification is offline, with the public keys).
path "transit/sign/tokenvault-audit" {
  capabilities = ["update"]
}
path "transit/keys/tokenvault-audit" {
  capabilities = ["read"]
}
