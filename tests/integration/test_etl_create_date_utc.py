"""create_date is the UTC date of SQS's SentTimestamp, whatever the time zones of the ETL's host and session.

Chaos 49 (held): the ETL runs with TZ=Pacific/Kiritimati (UTC+14: its local date is the next UTC day for ten
hours of every day) and PGTZ=America/Adak (UTC-10, the database session's zone); each row's create_date must still
be the UTC date of its sent_at, and sent_at SQS's own SentTimestamp (read back from a message of the same queue).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from devstack.events import send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_harness_env
from tests.integration.etl_landings import events

REPO = Path(__file__).resolve().parents[2]


def test_create_date_is_the_utc_date_of_the_sent_timestamp_under_far_time_zones(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    sent = events(30, malformed_rate=0)
    env = {**etl_harness_env(stack_env, vault.address), "ETL_METRICS_PORT": "0"}
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    send_events(sqs, env["ETL_QUEUE_URL"], sent)
    drained = subprocess.run(
        [sys.executable, "-m", "etl_service", "drain"],
        env={**os.environ, **env, "TZ": "Pacific/Kiritimati", "PGTZ": "America/Adak"},
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert drained.returncode == 0, drained.stderr.decode()[-2000:]
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        rows = conn.execute(
            "SELECT event_id, create_date, sent_at FROM user_logins WHERE event_id = ANY(%s)",
            ([e.event_id for e in sent],),
        ).fetchall()
    assert len(rows) == len(sent)
    for _, create_date, sent_at in rows:
        assert create_date == sent_at.astimezone(UTC).date()
        assert abs((datetime.now(UTC) - sent_at).total_seconds()) < 600  # SQS's time, not a zone's offset
