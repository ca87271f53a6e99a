-- A data key's id is given by the owner, one past the highest ever stored: no login can use ids up (attack 32, F6).
--
-- vault.data_keys.id was a `serial`: its default, nextval('vault.data_keys_id_seq'), ran as the inserting role, so
-- the serving role held USAGE on the sequence (0002) - and USAGE is all nextval takes. One session of any login of
-- that role (`SELECT count(nextval('vault.data_keys_id_seq')) FROM generate_series(1, 1000000)` in a loop, 3.1 M
-- ids/s) ran the integer sequence to 2^31 in ~11 min; from then on no data key could be made - every key rotation
-- failed (SequenceGeneratorLimitExceeded) until the owner altered the sequence by hand.
--
-- Widening the column and its sequence to bigint only moves that end: a key's id is also stored in integer columns
-- (vault.tokens.dek_id, fingerprint_key_id, next_fingerprint_key_id; vault.data_key_check_values.key_id;
-- vault.replaced_wrapped_keys.key_id) and passed to integer parameters (vault.data_key_material_seen and the key
-- job functions), so a key made past 2^31 after such a loop would make every new token's insert fail instead
-- (integer out of range) - and widening vault.tokens' columns rewrites that table under an ACCESS EXCLUSIVE lock.
-- So no login may use ids up at all:
-- * the sequence is dropped; no login holds a sequence it may advance but the audit log's and audit checkpoints',
--   both bigint (9.2e18 ids: ~94,000 years at the same 3.1 M/s);
-- * vault.new_data_key_id() (the owner's, SECURITY DEFINER) is the id one past the highest ever stored - in
--   vault.data_keys, vault.data_key_check_values (every key's id and check value ever stored, kept though a key's row
--   be deleted) and vault.replaced_wrapped_keys - read, never used up: the column's default now, so an insert
--   with the triggers off (the owner's, session_replication_role = replica) is numbered as before;
-- * vault.data_keys_given_an_id, a BEFORE INSERT trigger of the owner (it fires before data_keys_lifecycle, by
--   name), gives every row a login but the owner inserts that id, whatever id the insert named. An insert rolled
--   back uses nothing up; only committed keys count, and each is a key rotation, audited. Two inserts at once get
--   the same id and the second fails on the primary key (the vault makes its keys one at a time, under the
--   key-generation lock, 0045).
-- Key ids stay integer: they count keys made, never near 2^31.
SET ROLE tokenvault_owner;

CREATE OR REPLACE FUNCTION vault.new_data_key_id() RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT 1 OPERATOR(pg_catalog.+) greatest(
        (SELECT coalesce(max(k.id), 0) FROM vault.data_keys k),
        (SELECT coalesce(max(s.key_id), 0) FROM vault.data_key_check_values s),
        (SELECT coalesce(max(r.key_id), 0) FROM vault.replaced_wrapped_keys r))
$$;
REVOKE ALL ON FUNCTION vault.new_data_key_id() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION vault.new_data_key_id() TO tokenvault_vault;  -- the default runs as the inserting role

CREATE OR REPLACE FUNCTION vault.data_keys_given_an_id() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_has_role(session_user, 'tokenvault_owner', 'MEMBER') OR NEW.id IS NULL THEN
        NEW.id := vault.new_data_key_id();
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION vault.data_keys_given_an_id() FROM PUBLIC;

DROP TRIGGER IF EXISTS data_keys_given_an_id ON vault.data_keys;
CREATE TRIGGER data_keys_given_an_id BEFORE INSERT ON vault.data_keys
    FOR EACH ROW EXECUTE FUNCTION vault.data_keys_given_an_id();

ALTER TABLE vault.data_keys ALTER COLUMN id SET DEFAULT vault.new_data_key_id();
DROP SEQUENCE IF EXISTS vault.data_keys_id_seq;

RESET ROLE;
