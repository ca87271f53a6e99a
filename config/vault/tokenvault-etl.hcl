# The ETL: may seal the bodies of dead letters with their own Transit key, prove that a dead
# letter moved back to the source queue holds a genuine ciphertext under that key (rewrap: it
# fails on any other ciphertext and returns a new ciphertext, never the plaintext), and check
# the tag `dead-letters resend` puts on a re-sent letter's original sent time (verify: it answers
# valid or not, never a tag; only the DLQ operator may make one), and tag and check with a key of
# its own the SentTimestamp SQS kept on a message its take-back sends back from the DLQ (hmac and
# verify with tokenvault-take-back-times, an HMAC-only key: no new power - its database role may
# insert any create_date anyway; no one else may make that tag), and sign, per load batch, the list
# of the digests of the rows it loads into user_logins with an ed25519 key of its own
# (tokenvault-login-rows, not exportable: attack 41, A41-1 - the database owner cannot make a
# signature, so `tokenvault erase` refuses rows he rewrote; the ETL signs only what it already
# holds, the fields of its messages and the tokens Tokenize returned it, and reads no key).
# Nothing else. It cannot decrypt what it sealed, read or use the vault service's keys, verify
# or read the login-rows key, or manage any key.
path "transit/encrypt/tokenvault-dead-letters" {
  capabilities = ["update"]
}
path "transit/rewrap/tokenvault-dead-letters" {
  capabilities = ["update"]
}
path "transit/verify/tokenvault-dead-letters" {
  capabilities = ["update"]
}
path "transit/hmac/tokenvault-take-back-times" {
  capabilities = ["update"]
}
path "transit/verify/tokenvault-take-back-times" {
  capabilities = ["update"]
}
path "transit/sign/tokenvault-login-rows" {
  capabilities = ["update"]
}
