# The ETL: may seal the bodies of dead letters with their own Transit key, and prove that a
# dead letter moved back to the source queue holds a genuine ciphertext under that key (rewrap:
# it fails on any other ciphertext and returns a new ciphertext, never the plaintext). Nothing else.
# It cannot decrypt what it sealed, read or use the vault service's keys, or manage any key.
path "transit/encrypt/tokenvault-dead-letters" {
  capabilities = ["update"]
}
path "transit/rewrap/tokenvault-dead-letters" {
  capabilities = ["update"]
}
