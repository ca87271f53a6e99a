-- Every variable-size column of vault.audit_log bounded to what the vault ever writes (attack 28, F3).
--
-- The serving role INSERTs audit rows by design (the chain trigger numbers and hashes them), and
-- nothing bounded their size: six rows of 100 MB each took the vault past its 1 GiB memory limit
-- during one audit report. The vault writes names, a purpose of at most 64 characters, short
-- outcomes and the keyed hashes of at most MAX_ITEMS_PER_CALL tokens (domain/audit.py): these
-- bounds are well above that (purpose: 64 characters of up to 4 bytes; the text columns together:
-- MAX_ROW_TEXT_BYTES, which the upkeep already takes as the most a genuine row holds; `revealed`:
-- MAX_ITEMS_PER_CALL hashes of 16 bytes in its binary form, as MAX_ROW_BYTES counts it).
--
-- NOT VALID: rows already stored are not checked (a row of a release older than the purpose's
-- length check may be longer; scanning a log of millions of rows would hold its lock that long);
-- every row inserted or updated from now on is. The database's owner can still drop the
-- constraint: a report reads no row larger than a genuine one (adapters/postgres/audit_chain.py's
-- record_pages) and names it as tampered instead.
--
-- Adding the constraint takes an ACCESS EXCLUSIVE lock on vault.audit_log for a moment (no scan):
-- it waits at most 2 s for it (every audited call queues behind it for that long at most); on
-- LockNotAvailable run it again.
SET ROLE tokenvault_owner;
SET lock_timeout = '2s';
ALTER TABLE vault.audit_log DROP CONSTRAINT IF EXISTS audit_log_row_sizes_bounded;
ALTER TABLE vault.audit_log ADD CONSTRAINT audit_log_row_sizes_bounded CHECK (
    octet_length(client) <= 1024
    AND octet_length(action) <= 256
    AND octet_length(purpose) <= 256
    AND octet_length(token_types) <= 1024
    AND octet_length(client_serial) <= 256
    AND octet_length(client_cert_sha256) <= 256
    AND coalesce(octet_length(client), 0) + coalesce(octet_length(action), 0) + coalesce(octet_length(purpose), 0)
        + coalesce(octet_length(token_types), 0) + coalesce(octet_length(outcome), 0)
        + coalesce(octet_length(client_serial), 0) + coalesce(octet_length(client_cert_sha256), 0) <= 65536
    AND cardinality(revealed) <= 10000
    AND octet_length(pg_catalog.array_send(revealed)) <= 20 + 10000 * (4 + 16)
) NOT VALID;
RESET lock_timeout;
RESET ROLE;
