-- Attack 46, A46-1 (the `action` variant) and A46-3: a signed checkpoint commits to the audit log's erase rows up to
-- its head - their count and a running SHA-256 over (id, row_hash) of every row whose action is 'erase', computed by
-- the audit upkeep from rows it hashed and linked up to that head, and signed with it (message v2). A starting
-- replica checks the erase rows it reads against the newest such checkpoint and refuses to start on a mismatch; a
-- running one checks each newer checkpoint; `audit verify` checks every one. Checkpoints stored before carry none
-- (NULL, NULL: message v1).
SET ROLE tokenvault_owner;

ALTER TABLE vault.audit_checkpoints ADD COLUMN IF NOT EXISTS erase_count bigint;
ALTER TABLE vault.audit_checkpoints ADD COLUMN IF NOT EXISTS erase_digest bytea;
ALTER TABLE vault.audit_checkpoints DROP CONSTRAINT IF EXISTS audit_checkpoints_erase_commitment;
ALTER TABLE vault.audit_checkpoints ADD CONSTRAINT audit_checkpoints_erase_commitment CHECK (
    (erase_count IS NULL AND erase_digest IS NULL)
    OR (erase_count >= 0 AND octet_length(erase_digest) = 32)
);

RESET ROLE;
