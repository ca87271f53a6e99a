# An operator who looks at dead letters: may open (decrypt) a sealed dead-letter body, and
# nothing else. OpenBao's audit device records each decrypt (who, when; the data HMAC-ed).
path "transit/decrypt/tokenvault-dead-letters" {
  capabilities = ["update"]
}
