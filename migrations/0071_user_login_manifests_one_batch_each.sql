-- A signed list of user_logins rows is at most one ETL batch: 1,000 rows of 32 bytes (attack 48, A48-2).
--
-- The ETL's database role may INSERT any list (migration 0068): one of 64 MiB, named by one row holding a
-- person's token, made `tokenvault erase` refuse every erasure of that person before verifying anything (its
-- read of the lists is bounded). The ETL signs one list per load batch, and a batch is at most ETL_BATCH_SIZE's
-- upper bound, 1,000 messages (etl_service/config.py; tokenvault_common/login_row_signatures.py,
-- MAX_LIST_BYTES_EACH): no list it makes is larger than 32,000 bytes. The database owner can drop this check; the
-- command therefore reads no larger list either, whatever the table holds (a row naming one does not verify).
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_catalog.pg_constraint
        WHERE conname = 'user_login_manifests_one_batch'
          AND conrelid = 'public.user_login_manifests'::pg_catalog.regclass
    ) THEN
        ALTER TABLE public.user_login_manifests
            ADD CONSTRAINT user_login_manifests_one_batch CHECK (length(digests) <= 32000);
    END IF;
END
$$;
