-- The serving role inserts new tokens, naming the columns it fills; nothing else (review of 0011).
--
-- With INSERT on the whole table the role could choose a row's id (OVERRIDING SYSTEM VALUE):
-- rows planted just ahead of the identity sequence made later inserts meet the primary key,
-- and their batches fail. It could also set erased_at, which the key maintainer reads to learn
-- of erasures on other replicas. Column privileges leave it only the columns the service
-- writes; id, created_at and erased_at take their defaults.
REVOKE INSERT ON vault.tokens FROM tokenvault_vault;
GRANT INSERT (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed, next_fingerprint)
    ON vault.tokens TO tokenvault_vault;
