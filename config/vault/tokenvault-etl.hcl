# The ETL: may seal the bodies of dead letters with their own Transit key, and nothing else.
# It cannot decrypt what it sealed, read or use the vault service's keys, or manage any key.
path "transit/encrypt/tokenvault-dead-letters" {
  capabilities = ["update"]
}
