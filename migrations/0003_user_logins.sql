-- The analysts' table. Created with the exercise's DDL when absent, then upgraded in place
-- (columns added, never dropped or rewritten) so an existing exercise table keeps its rows.
CREATE TABLE IF NOT EXISTS public.user_logins (
    user_id             varchar(128),
    device_type         varchar(32),
    masked_ip           varchar(256),
    masked_device_id    varchar(256),
    locale              varchar(32),
    app_version         integer,
    create_date         date
);

ALTER TABLE public.user_logins
    ADD COLUMN IF NOT EXISTS app_version_text varchar(32),   -- exact original, "2.0" <> "2.00"
    ADD COLUMN IF NOT EXISTS event_id         varchar(128),  -- idempotency key (see README)
    ADD COLUMN IF NOT EXISTS sqs_message_id   varchar(128),
    ADD COLUMN IF NOT EXISTS sent_at          timestamptz,   -- SQS SentTimestamp
    ADD COLUMN IF NOT EXISTS loaded_at        timestamptz DEFAULT now();

-- Rows loaded before this migration have no event_id; NULLs do not collide.
CREATE UNIQUE INDEX IF NOT EXISTS user_logins_event_id_key ON public.user_logins (event_id);
CREATE INDEX IF NOT EXISTS user_logins_masked_ip ON public.user_logins (masked_ip);
CREATE INDEX IF NOT EXISTS user_logins_masked_device_id ON public.user_logins (masked_device_id);

-- Metadata only: which message was refused and why. No body, no PII.
CREATE TABLE IF NOT EXISTS public.etl_quarantine (
    event_id       varchar(128) PRIMARY KEY,
    sqs_message_id varchar(128) NOT NULL,
    reason         varchar(64) NOT NULL,
    detail         varchar(512) NOT NULL,
    sent_at        timestamptz,
    quarantined_at timestamptz NOT NULL DEFAULT now()
);

REVOKE ALL ON public.user_logins, public.etl_quarantine FROM PUBLIC;
GRANT SELECT, INSERT ON public.user_logins, public.etl_quarantine TO tokenvault_etl;
GRANT SELECT ON public.user_logins TO tokenvault_analyst;
