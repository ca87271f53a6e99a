# An operator who looks at dead letters: may open (decrypt) a sealed dead-letter body, and vouch
# for the original sent time of a letter it re-sends (hmac: `dead-letters resend` tags the time,
# event id and body; the ETL believes the time only with that tag), and nothing else. OpenBao's
# audit device records each decrypt and each HMAC (who, when; the data HMAC-ed).
path "transit/decrypt/tokenvault-dead-letters" {
  capabilities = ["update"]
}
path "transit/hmac/tokenvault-dead-letters" {
  capabilities = ["update"]
}
