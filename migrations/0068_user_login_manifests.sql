-- Each row of user_logins names the ETL's signed list of its load batch's row digests (attack 41, A41-1).
--
-- The database owner could rewrite any row of user_logins: two people's tokens swapped, the privacy officer's
-- `erase --user-id A` (its count reading A's rows) destroyed B's values and left A's revealable, with `audit
-- verify` intact. Now the ETL, per load batch, hashes each row's (event id, user id, masked ip, masked device id,
-- create date) with SHA-256 and has OpenBao Transit sign the list once with an ed25519 key of its own
-- (tokenvault-login-rows, not exportable; its policy may only sign with it); the list and its signature are
-- inserted here and each row names its list in `row_manifest`, in the rows' transaction
-- (tokenvault_common/login_row_signatures.py). `tokenvault erase` verifies the rows holding the tokens offline with
-- the key's public keys, and erases nothing when one does not verify. Rows loaded before this migration have no
-- list (row_manifest NULL): the command counts them apart and erases only once the officer confirms their number.
--
-- No foreign key from user_logins: it would cost the load a look-up per row, and the owner could drop it anyway;
-- a row naming no list that verifies is refused by the command, whatever the database says.
CREATE TABLE IF NOT EXISTS public.user_login_manifests (
    manifest_id uuid PRIMARY KEY,
    digests     bytea NOT NULL CHECK (length(digests) > 0 AND length(digests) % 32 = 0),
    signature   text NOT NULL CHECK (signature LIKE 'vault:v%'),
    signed_at   timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE public.user_logins ADD COLUMN IF NOT EXISTS row_manifest uuid;

-- The ETL inserts lists (its INSERT on user_logins covers the new column); it reads none, like the rows' tokens.
-- The analysts' role (the privacy officer's login is one of it) reads them to verify rows.
REVOKE ALL ON public.user_login_manifests FROM PUBLIC;
GRANT INSERT ON public.user_login_manifests TO tokenvault_etl;
GRANT SELECT ON public.user_login_manifests TO tokenvault_analyst;
