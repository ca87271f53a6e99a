"""Token vault: stable random tokens for PII, envelope-encrypted under keys held by Vault Transit."""
