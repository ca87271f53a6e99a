-- user_logins refuses control characters and the invisible formatting characters used to spoof
-- what a terminal shows (review of 4 Dec, left item: "user_logins has no CHECK against control
-- characters").
--
-- The ETL already sends any event holding one of them to the dead-letter queue with reason
-- control_character (etl_service/domain/validation.py refuses the Unicode categories Cc, Cf, Cs,
-- Co and Cn; event ids must be isprintable()). But an insider with the ETL's database identity
-- may INSERT rows directly, and an analyst reading user_logins with psql gets the bytes as they
-- are: an escape sequence rewrites the analyst's terminal, a right-to-left override reverses
-- what a token or user id appears to be. The analysts' CLI escapes them (cbf4168); psql does
-- not. Now the table itself refuses them, whoever writes.
--
-- The class below is a subset of what the ETL refuses (tests/unit/test_user_logins_printable.py
-- checks every code point of it against the ETL's validation), so no event the ETL accepts can
-- fail this check and loop on its queue: C0 and C1 controls and DEL (Cc), the soft hyphen, the
-- Arabic letter mark, zero-width characters, the bidirectional embeddings, overrides and
-- isolates, word joiners and invisible operators, and the byte order mark (Cf). NUL cannot be
-- stored in text at all.
--
-- NOT VALID: enforced for every new or updated row; rows loaded before (by an older ETL, or
-- written by hand) are kept, as every migration keeps the exercise table's rows. Find them with
-- the constraint's expression, then `ALTER TABLE public.user_logins VALIDATE CONSTRAINT
-- user_logins_printable` once they are mended.
DO $$
DECLARE
    refused constant text := '[\x01-\x1f\x7f-\x9f\u00ad\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]';
    columns constant text[] := ARRAY['user_id', 'device_type', 'masked_ip', 'masked_device_id', 'locale',
                                     'app_version_text', 'event_id', 'sqs_message_id'];
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_constraint
        WHERE conname = 'user_logins_printable' AND conrelid = 'public.user_logins'::regclass
    ) THEN
        EXECUTE format(
            'ALTER TABLE public.user_logins ADD CONSTRAINT user_logins_printable CHECK (%s) NOT VALID',
            (SELECT string_agg(format('%I !~ %L', c, refused), ' AND ') FROM unnest(columns) AS c)
        );
    END IF;
END
$$;
