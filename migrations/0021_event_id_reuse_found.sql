-- A different event under an event_id already loaded is found, not skipped as a duplicate
-- (insider round 6, Break 4, 3 Dec).
--
-- The ETL loads with INSERT ... ON CONFLICT (event_id) DO NOTHING. That cannot tell a replay
-- (the same event again: an SQS redelivery, a dead letter taken back) from a collision (another
-- event under an id already loaded). The producer is untrusted and chooses event_id: whoever
-- could write to the queue and predict ids suppressed genuine events, with no trace but the
-- duplicates counter.
--
-- When a load skips rows, the ETL asks this function which of them differ from the row stored
-- under their event_id in the columns that hold no token: user_id, device_type, locale,
-- app_version, app_version_text and create_date (the UTC date of the original SentTimestamp,
-- which a redelivery and a dead letter taken back or re-sent keep). The ETL quarantines those
-- as event_id_reused; the others are replays. It returns only the position of each differing
-- row passed in and the loaded row's sqs_message_id (a column the ETL may read anyway, 0006).
--
-- - The ETL keeps its privileges on user_logins: INSERT, and SELECT of event_id and
--   sqs_message_id only. The function runs as the owner of user_logins (the migrator), with a
--   fixed search_path and every table named by schema, and only tokenvault_etl may execute it.
-- - The token columns (masked_ip, masked_device_id) are not compared and not passed: the ETL
--   may tokenize any guessed value, so "does event E have this ip token?" would be a
--   dictionary oracle on every stored event. A collision that differs in nothing but the
--   tokens (same user, device type, locale, version and day) therefore still counts as a
--   replay.
-- - What the ETL could learn through it: whether a guessed (user_id, device_type, locale,
--   app_version, create_date) is the one stored under an event_id. These columns hold no
--   vaulted value, and the ETL writes each of them in the first place.
CREATE OR REPLACE FUNCTION public.user_logins_reused_event_ids(
    event_ids text[], user_ids text[], device_types text[], locales text[],
    app_versions integer[], app_version_texts text[], create_dates date[]
) RETURNS TABLE (item integer, loaded_message_id text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT staged.item::integer, stored.sqs_message_id::text
    FROM unnest(event_ids, user_ids, device_types, locales, app_versions, app_version_texts, create_dates)
        WITH ORDINALITY AS staged (event_id, user_id, device_type, locale, app_version, app_version_text,
                                   create_date, item)
    JOIN public.user_logins AS stored ON stored.event_id = staged.event_id
    WHERE (stored.user_id, stored.device_type, stored.locale, stored.app_version, stored.app_version_text,
           stored.create_date)
        IS DISTINCT FROM (staged.user_id, staged.device_type, staged.locale, staged.app_version,
                          staged.app_version_text, staged.create_date)
$$;

REVOKE ALL ON FUNCTION public.user_logins_reused_event_ids(text[], text[], text[], text[], integer[], text[], date[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.user_logins_reused_event_ids(text[], text[], text[], text[], integer[], text[], date[])
    TO tokenvault_etl;
