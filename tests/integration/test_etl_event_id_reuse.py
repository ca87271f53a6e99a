"""A different event under an event_id already loaded is quarantined; the same event again is a duplicate.

Insider round 6, Break 4: `ON CONFLICT (event_id) DO NOTHING` skipped a second, different event
under a loaded event_id exactly as it skips a redelivery, so whoever could write to the queue and
predict a producer's ids suppressed genuine events with no trace. Real SQS (ministack), the real
vault service, OpenBao (sealing) and PostgreSQL throughout; the loader connects as the ETL's role.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import ConnectionPool

from devstack.events import OutgoingEvent, send_events
from devstack.sqs import sqs_client
from etl_service.adapters.postgres import PostgresLoginStore
from etl_service.domain.messages import QueueMessage, UserLoginRow, to_row
from etl_service.domain.validation import parse_login_event
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters, run_dead_letters
from tests.malformed_samples import body

FUNCTION = "public.user_logins_reused_event_ids(text[], text[], text[], text[], integer[], text[], date[])"
CALL = "SELECT item, loaded_message_id FROM public.user_logins_reused_event_ids(%s, %s, %s, %s, %s, %s, %s)"
DAY_MS = 86_400_000
SENT_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def event(user_id: str, ip: str, device_id: str) -> str:
    return body(user_id=user_id, ip=ip, device_id=device_id, device_type="android", locale="en_US")


def row(message_id: str, event_id: str, text: str, sent_ms: int = SENT_MS, tokens: str = "a") -> UserLoginRow:
    message = QueueMessage(message_id, "r", text, sent_ms, 1, event_id)
    return to_row(message, parse_login_event(text), f"ip_{tokens}", f"dev_{tokens}")


def stored(dsn: str, event_id: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT user_id, sqs_message_id FROM user_logins WHERE event_id = %s", (event_id,)
        ).fetchall()


def quarantined(dsn: str, message_id: str) -> tuple[object, ...] | None:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT reason, detail, event_id FROM etl_quarantine WHERE sqs_message_id = %s", (message_id,)
        ).fetchone()


def test_a_different_event_under_a_loaded_event_id_ends_in_the_dlq_with_its_reason_sealed(
    stack_env: dict[str, str], vault: RunningVault, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack report's reproduction: a planted event first, the genuine one under its id later."""
    tag = uuid.uuid4().hex[:8]
    event_id = f"order-evt-{tag}"  # a predictable producer id
    planted = OutgoingEvent(event_id, event(f"planted-{tag}", "192.0.2.1", f"planted-dev-{tag}"))
    genuine = OutgoingEvent(event_id, event(f"genuine-{tag}", "192.0.2.42", f"genuine-dev-{tag}"))
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        send_events(sqs, etl.queue_url, [planted])
        assert etl.wired.consumer.drain().loaded == 1
        send_events(sqs, etl.queue_url, [genuine])
        with caplog.at_level(logging.INFO, logger="etl_service"):
            summary = etl.wired.consumer.drain()
    assert (summary.received, summary.loaded, summary.already_loaded, summary.quarantined) == (1, 0, 0, 1)
    assert summary.reasons == {"event_id_reused": 1}
    ((planted_user, planted_message_id),) = stored(stack_env["PG_ADMIN_DSN"], event_id)
    assert planted_user == f"planted-{tag}"  # the loaded row is kept as it was

    (dead,) = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert (attributes["reason"], attributes["event_id"]) == ("event_id_reused", event_id)
    genuine_message_id = attributes["source_message_id"]
    assert str(planted_message_id) in attributes["reason_detail"]
    assert json.loads(dead["Body"])["format"] == "tokenvault-dead-letter/1"
    assert not [v for v in ("192.0.2.42", f"genuine-dev-{tag}") if v in dead["Body"] + json.dumps(attributes)]

    record = quarantined(stack_env["PG_ADMIN_DSN"], genuine_message_id)
    assert record is not None and record[0] == "event_id_reused" and record[2] == genuine_message_id
    assert str(planted_message_id) in str(record[1])

    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    shown = run_dead_letters(env, "show", dead["MessageId"], token=operator_token)
    assert shown.returncode == 0 and json.loads(shown.stdout) == json.loads(genuine.body)  # recoverable

    logged = [r for r in caplog.records if getattr(r, "loaded_message_id", None) == planted_message_id]
    assert [getattr(r, "message_id", None) for r in logged] == [genuine_message_id]
    text = "\n".join(r.getMessage() + json.dumps(r.__dict__, default=str) for r in caplog.records)
    assert not [v for v in ("192.0.2.42", f"genuine-dev-{tag}", f"genuine-{tag}") if v in text]


def test_the_same_event_again_is_a_duplicate_loaded_once_even_through_the_dlq(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """A replay by the producer, and a loaded event SQS's redrive moved to the DLQ and a drain took back."""
    tag = uuid.uuid4().hex[:8]
    loaded = OutgoingEvent(f"replayed-{tag}", event(f"replayed-{tag}", "192.0.2.7", f"replayed-dev-{tag}"))
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        send_events(sqs, etl.queue_url, [loaded])
        assert etl.wired.consumer.drain().loaded == 1
        send_events(sqs, etl.queue_url, [loaded])  # the producer sends it again
        again = etl.wired.consumer.drain()
        # As the redrive policy moves it after a crash loop: the original, no reason, into the DLQ.
        send_events(sqs, etl.dlq_url, [loaded])
        taken_back = run_dead_letters(env, "redrive")
        assert taken_back.returncode == 0 and "taken back: 1" in taken_back.stdout, taken_back.stderr
        third = etl.wired.consumer.drain()
    for summary in (again, third):
        assert (summary.received, summary.loaded, summary.already_loaded, summary.quarantined) == (1, 0, 1, 0)
    assert len(stored(stack_env["PG_ADMIN_DSN"], loaded.event_id)) == 1
    assert all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url) == []


def test_the_loader_tells_a_redelivery_from_a_reused_event_id_by_the_columns_without_tokens(
    stack_env: dict[str, str],
) -> None:
    """Row by row as the ETL's role: same columns and day = replay; any of them different = reused."""
    tag = uuid.uuid4().hex[:8]
    text = event(f"u-{tag}", "192.0.2.10", f"dev-{tag}")
    original = row(f"{tag}-m1", f"{tag}-e1", text)
    other_user = row(f"{tag}-m3", f"{tag}-e1", event(f"other-{tag}", "192.0.2.10", f"dev-{tag}"))
    next_day = row(f"{tag}-m4", f"{tag}-e1", text, sent_ms=SENT_MS + DAY_MS)  # create_date differs
    other_version = row(f"{tag}-m5", f"{tag}-e1", text.replace('"2.3.0"', '"2.3"'))
    with ConnectionPool(stack_env["PG_ETL_DSN"], min_size=1, max_size=1) as pool:
        store = PostgresLoginStore(pool)
        assert store.write([original], []).rows_inserted == 1
        redelivered = store.write([original], [])  # a crash after the commit: the same SQS message
        taken_back = store.write([row(f"{tag}-m2", f"{tag}-e1", text, tokens="b")], [])  # new message, same sent time
        refused = store.write([other_user, next_day, other_version], [])
        # Two different events under one new id in one batch: one loads, the other is refused.
        first, second = row(f"{tag}-m6", f"{tag}-e2", text), row(f"{tag}-m7", f"{tag}-e2", event("x", "192.0.2.1", "d"))
        same_batch = store.write([first, second], [])
    assert (redelivered.rows_inserted, redelivered.reused) == (0, ())
    assert (taken_back.rows_inserted, taken_back.reused) == (0, ())  # tokens are not compared
    assert refused.rows_inserted == 0 and refused.quarantined_inserted == 3
    assert {r.message_id for r in refused.reused} == {f"{tag}-m3", f"{tag}-m4", f"{tag}-m5"}
    assert {r.loaded_message_id for r in refused.reused} == {f"{tag}-m1"}
    assert same_batch.rows_inserted == 1 and len(same_batch.reused) == 1
    ((_, loaded_id),) = stored(stack_env["PG_ADMIN_DSN"], f"{tag}-e2")
    assert same_batch.reused[0].loaded_message_id == loaded_id
    assert same_batch.reused[0].message_id == ({f"{tag}-m6", f"{tag}-m7"} - {loaded_id}).pop()
    for message_id in (f"{tag}-m3", f"{tag}-m4", f"{tag}-m5", same_batch.reused[0].message_id):
        record = quarantined(stack_env["PG_ADMIN_DSN"], message_id)
        assert record is not None and record[0] == "event_id_reused"
    assert quarantined(stack_env["PG_ADMIN_DSN"], f"{tag}-m2") is None


def test_the_etl_compares_only_through_the_function_and_it_tells_nothing_of_tokens(
    stack_env: dict[str, str],
) -> None:
    tag = uuid.uuid4().hex[:8]
    text = event(f"u-{tag}", "192.0.2.20", f"dev-{tag}")
    # Two loaded events alike in every column but their tokens.
    rows = [row(f"{tag}-m1", f"{tag}-e1", text, tokens=f"{tag}x"), row(f"{tag}-m2", f"{tag}-e2", text, tokens="y")]
    with ConnectionPool(stack_env["PG_ETL_DSN"], min_size=1, max_size=1) as pool:
        assert PostgresLoginStore(pool).write(rows, []).rows_inserted == 2
    alike = [
        [r.event_id for r in rows],
        [r.user_id for r in rows],
        [r.device_type for r in rows],
        [r.locale for r in rows],
        [r.app_version for r in rows],
        [r.app_version_text for r in rows],
        [r.create_date for r in rows],
    ]
    with psycopg.connect(stack_env["PG_ETL_DSN"], autocommit=True) as etl:
        for column in ("user_id", "masked_ip", "masked_device_id", "create_date", "*"):
            with pytest.raises(errors.InsufficientPrivilege):
                etl.execute(f"SELECT {column} FROM public.user_logins LIMIT 1")
        assert etl.execute(CALL, alike).fetchall() == []  # the same answer whatever their tokens
        other = [*alike[:1], [f"x-{tag}", rows[1].user_id], *alike[2:]]
        assert etl.execute(CALL, other).fetchall() == [(1, f"{tag}-m1")]
        # No argument takes a token, so no token can be guessed through it.
        with pytest.raises(errors.UndefinedFunction):
            etl.execute(f"{CALL[:-1]}, %s)", [*alike, ["ip_" + tag] * 2])
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as admin:
        definition = admin.execute(
            "SELECT p.prosecdef, p.proconfig, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid),"
            " pg_get_userbyid(p.proowner) = pg_get_userbyid(c.relowner)"
            " FROM pg_proc p, pg_class c WHERE p.oid = %s::regprocedure AND c.oid = 'public.user_logins'::regclass",
            (FUNCTION,),
        ).fetchone()
        assert definition is not None
        secure, config, arguments, source, owned_by_the_table_owner = definition
        assert secure and config == ["search_path=pg_catalog, pg_temp"] and owned_by_the_table_owner
        assert "masked" not in arguments and "masked" not in source
        may_execute = {
            role: admin.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, FUNCTION)).fetchone()
            for role in ("tokenvault_etl", "tokenvault_analyst", "tokenvault_vault", "public")
        }
    assert may_execute == {"tokenvault_etl": (True,), "tokenvault_analyst": (False,), "tokenvault_vault": (False,),
                           "public": (False,)}  # fmt: skip
    with psycopg.connect(stack_env["PG_ANALYST_DSN"]) as analyst, pytest.raises(errors.InsufficientPrivilege):
        analyst.execute(CALL, alike)
