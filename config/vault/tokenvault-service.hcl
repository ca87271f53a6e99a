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
