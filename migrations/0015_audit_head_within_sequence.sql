-- The audit upkeep reads the audit id sequence (second insider round, a row planted beyond it).
--
-- The chain trigger (0008) numbers every audit row with nextval('vault.audit_log_id_seq'), so
-- no legitimate row has an id beyond the sequence's last value. The database owner could set
-- the sequence far ahead for one insert and back: the row the trigger chained there stayed the
-- row with the highest id, the upkeep signed it as the head for good, and every later row -
-- numbered below it - was never anchored. The upkeep now takes the newest row within the
-- sequence as the head, and reports rows beyond it; both read the sequence's last_value and
-- is_called, which takes SELECT on the sequence (USAGE, granted in 0002, covers nextval and
-- currval only).
SET ROLE tokenvault_owner;

GRANT SELECT ON SEQUENCE vault.audit_log_id_seq TO tokenvault_vault;

RESET ROLE;
