# The security team: rotates the KEK and retires old versions (min_decryption_version).
# It cannot decrypt anything or make data keys.
path "transit/keys/tokenvault/rotate" {
  capabilities = ["update"]
}
path "transit/keys/tokenvault/config" {
  capabilities = ["update"]
}
path "transit/keys/tokenvault" {
  capabilities = ["read"]
}
