"""An event user_logins already holds never reaches the vault again (attack 34, E1, E1b, E1c).

Before, the ETL tokenized a batch and only then loaded it: a replay of a loaded event (SQS's
redelivery, a crash between the commit and the delete, a producer's retry) was tokenized again and
skipped as `already_loaded` - after the privacy officer had erased the person's tokens, the vault
stored the erased ip and device id again under new tokens no row held; an event refused as
`event_id_reused` left its person's values in the vault the same way. Now the ETL asks which
event ids of the batch are loaded before it tokenizes (service/loaded_step.py): a replay is counted
`already_loaded` and deleted, a reused event_id is dead-lettered, and the vault mints nothing.

Real SQS (ministack), the real vault service, OpenBao and PostgreSQL, the real ETL consumer. The
vault's rows are counted with the database owner's DSN; no value is printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from devstack.events import OutgoingEvent, send_events
from devstack.sqs import sqs_client
from etl_service.errors import Misconfigured
from tests.conftest import RunningVault, etl_consumer, etl_harness_env, vault_clients
from tests.integration.etl_crash_driver import CRASHED
from tests.malformed_samples import body


def _values(tag: str, who: str) -> tuple[str, str, str]:
    """(user id, ip, device id) of one test's person: a benchmarking-range ip, no one's address."""
    ip = f"198.18.{int(tag[:2], 16)}.{int(tag[2:4], 16) % 250 + 1}"
    return f"e1-{who}-{tag}", ip, f"e1-{who}-device-{tag}"


def _tokens_of(admin: str, user_id: str) -> tuple[str, str]:
    with psycopg.connect(admin) as conn:
        ((ip_token, device_token),) = conn.execute(
            "SELECT masked_ip, masked_device_id FROM user_logins WHERE user_id = %s", (user_id,)
        ).fetchall()
    return str(ip_token), str(device_token)


def _now(admin: str) -> datetime:
    with psycopg.connect(admin) as conn:
        row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _vault_rows_since(admin: str, since: datetime) -> int:
    """Rows of vault.tokens created after `since` (this session's stack: no other test runs meanwhile)."""
    with psycopg.connect(admin) as conn:
        row = conn.execute("SELECT count(*) FROM vault.tokens WHERE created_at >= %s", (since,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_replay_after_the_erasure_mints_nothing_in_the_vault_and_is_counted_already_loaded(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    user_id, ip, device_id = _values(tag, "replay")
    event = OutgoingEvent(f"login-{tag}", body(user_id=user_id, ip=ip, device_id=device_id))
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    admin = stack_env["PG_ADMIN_DSN"]
    with (
        etl_consumer(etl_harness_env(stack_env, vault.address)) as etl,
        vault_clients(stack_env, vault.address) as make,
    ):
        send_events(sqs, etl.queue_url, [event])
        assert etl.wired.consumer.drain().loaded == 1
        tokens = _tokens_of(admin, user_id)
        assert make("privacy-officer").erase(list(tokens), "GDPR-2026-E1") == [None, None]
        erased = _now(admin)

        send_events(sqs, etl.queue_url, [event])  # the same event again: a producer's retry, a redelivery
        summary = etl.wired.consumer.drain()
        assert (summary.received, summary.loaded, summary.already_loaded, summary.quarantined) == (1, 0, 1, 0)
        assert _vault_rows_since(admin, erased) == 0, "the replay stored the erased values again"
        assert _tokens_of(admin, user_id) == tokens  # still the one row, with the erased tokens
    print(f"\nE1: a replay after the erasure: already_loaded, 0 vault rows minted; {time.monotonic() - started:.1f} s")


def test_an_event_under_a_loaded_event_id_is_dead_lettered_without_reaching_the_vault(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    first_user, first_ip, first_device = _values(tag, "first")
    second_user, second_ip, second_device = _values(tag[::-1], "second")
    event_id = f"order-evt-{tag}"
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    admin = stack_env["PG_ADMIN_DSN"]
    with etl_consumer(etl_harness_env(stack_env, vault.address)) as etl:
        first = body(user_id=first_user, ip=first_ip, device_id=first_device)
        send_events(sqs, etl.queue_url, [OutgoingEvent(event_id, first)])
        assert etl.wired.consumer.drain().loaded == 1
        before = _now(admin)
        second = body(user_id=second_user, ip=second_ip, device_id=second_device)
        send_events(sqs, etl.queue_url, [OutgoingEvent(event_id, second)])
        summary = etl.wired.consumer.drain()
        assert summary.reasons == {"event_id_reused": 1} and summary.loaded == 0
        assert _vault_rows_since(admin, before) == 0, "the refused event's values were stored in the vault"
        with psycopg.connect(admin) as conn:
            held = conn.execute("SELECT count(*) FROM user_logins WHERE user_id = %s", (second_user,)).fetchone()
            ((loaded_message,),) = conn.execute(
                "SELECT sqs_message_id FROM user_logins WHERE event_id = %s", (event_id,)
            ).fetchall()
            # Its quarantine row as the load wrote one: under its own message id, naming the loaded event's message.
            records = conn.execute(
                "SELECT event_id FROM etl_quarantine WHERE reason = 'event_id_reused' AND event_id = sqs_message_id"
                " AND detail LIKE %s",
                (f"%{loaded_message}%",),
            ).fetchall()
        assert held == (0,) and len(records) == 1
    print(f"\nE1b: event_id_reused dead-lettered, 0 vault rows minted; {time.monotonic() - started:.1f} s")


def test_a_redelivery_after_a_crash_between_commit_and_delete_and_an_erasure_mints_nothing(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """SQS's own redelivery (the same message): the ETL died right after its commit (os._exit), the officer
    erased, and the restarted ETL received the message again when the lease ran out."""
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    user_id, ip, device_id = _values(tag, "crash")
    etl_env = {**etl_harness_env(stack_env, vault.address, visibility_timeout=2), "ETL_BATCH_SIZE": "10"}
    event = OutgoingEvent(f"login-{tag}", body(user_id=user_id, ip=ip, device_id=device_id))
    send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), etl_env["ETL_QUEUE_URL"], [event])
    crashed = subprocess.run(
        [sys.executable, "-m", "tests.integration.etl_crash_driver", "after_commit"],
        env={**os.environ, **etl_env, "ETL_RECEIVERS": "1"},
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == CRASHED, crashed.stderr.decode()[-2000:]
    admin = stack_env["PG_ADMIN_DSN"]
    with vault_clients(stack_env, vault.address) as make:
        assert make("privacy-officer").erase(list(_tokens_of(admin, user_id)), "GDPR-2026-E1C") == [None, None]
    erased = _now(admin)
    time.sleep(2.2)  # the crashed ETL's lease (2 s) runs out: SQS delivers the same message again
    with etl_consumer(etl_env) as etl:
        summary = etl.wired.consumer.drain()
    assert (summary.received, summary.loaded, summary.already_loaded) == (1, 0, 1)
    assert _vault_rows_since(admin, erased) == 0, "the redelivery stored the erased values again"
    print(f"\nE1c: redelivered after a crash and the erasure: 0 vault rows minted; {time.monotonic() - started:.1f} s")


def test_an_etl_role_that_may_not_read_event_id_is_refused_at_start(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """The read before tokenizing needs SELECT of user_logins.event_id: without it the start check stops the ETL."""
    admin = stack_env["PG_ADMIN_DSN"]
    with etl_consumer(etl_harness_env(stack_env, vault.address)) as etl:
        store, dsn = etl.wired.store, etl.wired.database_dsn
        store.check_access(dsn)  # as configured: passes
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("REVOKE SELECT (event_id) ON public.user_logins FROM tokenvault_etl")
        try:
            with pytest.raises(Misconfigured, match=r"SELECT of user_logins\.event_id"):
                store.check_access(dsn)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("GRANT SELECT (event_id) ON public.user_logins TO tokenvault_etl")
        store.check_access(dsn)
