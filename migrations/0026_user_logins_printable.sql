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
-- The class below is every control (Cc, NUL aside: text cannot hold it) and format (Cf)
-- character of Unicode 14 - C0 and C1 controls and DEL, the soft hyphen, the Arabic and Syriac
-- number signs, zero-width characters, the bidirectional embeddings, overrides and isolates,
-- word joiners and invisible operators, the byte order mark, the interlinear annotations, the
-- tag characters ("ASCII smuggling") - all of which the ETL refuses already
-- (tests/unit/test_user_logins_printable.py checks every code point of the class against the
-- ETL's validation, and that the class holds every Cc and Cf code point), so no event the ETL
-- accepts can fail this check and loop on its queue. One match over the columns concatenated
-- (the class is of single characters, so joining cannot make or hide one): 2.4-3.9 us of
-- PostgreSQL's CPU per row against 7.2-9.3 for a match per column (review 20, R20-4).
--
-- NOT VALID: enforced for every new or updated row; rows loaded before (by an older ETL, or
-- written by hand) are kept, as every migration keeps the exercise table's rows. Find them with
-- the constraint's expression, then `ALTER TABLE public.user_logins VALIDATE CONSTRAINT
-- user_logins_printable` once they are mended.
DO $$
DECLARE
    refused constant text := '[\x01-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]';
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_constraint
        WHERE conname = 'user_logins_printable' AND conrelid = 'public.user_logins'::regclass
    ) THEN
        EXECUTE format(
            'ALTER TABLE public.user_logins ADD CONSTRAINT user_logins_printable CHECK (concat(user_id,'
            ' device_type, masked_ip, masked_device_id, locale, app_version_text, event_id, sqs_message_id)'
            ' !~ %L) NOT VALID',
            refused
        );
    END IF;
END
$$;
