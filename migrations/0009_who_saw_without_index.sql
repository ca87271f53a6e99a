-- The reveal index (GIN over audit_log.revealed) goes: every batched Detokenize added 1 000
-- entries to it inside the audit chain's lock, which serializes appends; measured side by side,
-- batched Detokenize lost most of its remaining gap to the run before the audit change without
-- it. `who-saw` scans the reveal hashes instead (an array overlap test per audit row, in C);
-- docs/production.md gives its cost and the way to index off the hot path when it matters.
DROP INDEX IF EXISTS vault.audit_log_revealed;
