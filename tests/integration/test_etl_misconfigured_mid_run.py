"""A misconfiguration that arrives while the ETL runs stops it loudly, moving no good message toward the DLQ.

Chaos 49 (C49-5 for the password): the start-up checks catch a refused privilege or password before the first
receive (test_etl_startup.py); here they change under a running service - INSERT on user_logins revoked, the
ETL's password changed, its role set NOLOGIN (R49-1: no SQLSTATE before a session, read by the server's text) -
while batches are in hand. Expected: exit 1 naming the refusal, every held message
released (nothing dead-lettered for it), and once the setting is right again a drain loads each event once.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import psycopg
import pytest

from devstack.events import send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import dead_letter_reasons
from tests.integration.etl_landings import assert_each_event_landed_once, events
from tests.integration.etl_process import exit_within, start_etl, wait_until_landed


def _revoke_insert(admin: str, etl_dsn: str) -> Callable[[], None]:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("REVOKE INSERT ON public.user_logins FROM tokenvault_etl")

    def undo() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("GRANT INSERT ON public.user_logins TO tokenvault_etl")

    return undo


def _change_password(admin: str, etl_dsn: str) -> Callable[[], None]:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("ALTER ROLE tokenvault_etl PASSWORD 'chaos49-not-the-etl-password'")
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'tokenvault_etl'")

    def undo() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            password = urlsplit(etl_dsn).password
            conn.execute(f"ALTER ROLE tokenvault_etl PASSWORD '{password}'")

    return undo


def _deny_login(admin: str, etl_dsn: str) -> Callable[[], None]:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("ALTER ROLE tokenvault_etl NOLOGIN")
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'tokenvault_etl'")

    def undo() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("ALTER ROLE tokenvault_etl LOGIN")

    return undo


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (_revoke_insert, b"the role of ETL_DATABASE_DSN lacks a privilege the ETL needs"),
        (_change_password, b"the password of ETL_DATABASE_DSN was refused"),  # C49-5: an outage for ever before
        (_deny_login, b"the role of ETL_DATABASE_DSN may not log in (NOLOGIN)"),  # R49-1: the same before
    ],
    ids=["insert_revoked", "password_changed", "nologin"],
)
def test_a_misconfiguration_mid_run_stops_the_etl_with_exit_1_and_dead_letters_no_good_event(
    stack_env: dict[str, str], vault: RunningVault, change: Callable[[str, str], Callable[[], None]], said: bytes
) -> None:
    sent = events(3000, malformed_rate=0.05)
    admin, endpoint = stack_env["PG_ADMIN_DSN"], stack_env["SQS_ENDPOINT_URL"]
    env = {
        **etl_harness_env(stack_env, vault.address, visibility_timeout=20, max_receive_count=3),
        "ETL_BATCH_SIZE": "50",
        "ETL_SHUTDOWN_GRACE_SECONDS": "5",
        "ETL_METRICS_PORT": "0",
    }
    send_events(sqs_client(endpoint), env["ETL_QUEUE_URL"], sent)
    process = start_etl(env)
    undo: Callable[[], None] | None = None
    try:
        wait_until_landed(process, admin, sent, 300)
        undo = change(admin, stack_env["PG_ETL_DSN"])
        err = exit_within(process, 60, "its misconfiguration")
        assert process.returncode == 1, err.decode()[-2000:]
        assert b"Postgres refused the ETL: " + said in err
        unloaded = [r for r in dead_letter_reasons(endpoint, env["ETL_DLQ_URL"]) if r != "invalid_payload"]
        assert not [r for r in unloaded if r in ("dependency_unavailable", "processing_failed")], unloaded
    finally:
        if process.poll() is None:
            process.kill()
        if undo is not None:
            undo()
    with etl_consumer(env) as etl:
        etl.wired.consumer.drain()
    assert_each_event_landed_once(admin, sent, endpoint, etl.dlq_url)
