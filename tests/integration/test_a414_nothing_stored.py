"""A41-4's remainders: the vault says when a failed Tokenize stored nothing; a retry's other ends are marked too.

(a) The vault's database refuses a Tokenize before its COMMIT (here the key-generation lock a new token's insert
needs is held past its 2 s wait: UNAVAILABLE): the vault knows it stored nothing and says so in the trailer
`tokenvault-nothing-stored` (vault_service/entrypoints/servicer.py). On the message's last receive the ETL's
letter is then a plain `dependency_unavailable` one, which `dead-letters erase` deletes - it was marked
"tokenize outcome unknown" and kept, for a resend that would find nothing.
(b) A Tokenize whose answer is lost, retried, and the retry ending INTERNAL (the vault's database refusing the
insert with an error of its own): the first call's outcome stays unknown, so the letter says so - it was
quarantined `processing_failed`, unmarked, and `erase` deleted it.

Real SQS, the in-process vault, OpenBao and PostgreSQL; the relay of test_a414_tokenize_answer_lost_retried.py.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from devstack.events import OutgoingEvent, send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters, run_dead_letters_here
from tests.integration.fresh_values import fresh_value
from tests.integration.test_a414_tokenize_answer_lost_retried import (
    TOKENIZE_DEADLINE_SECONDS,
    TOKENIZE_OUTCOME_UNKNOWN,
    Relay,
)
from tests.malformed_samples import body
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import NO_RETRY, TokenType, VaultClientError

KEYS_LOCK = 0x6B657973
"""vault_service/adapters/postgres/keys.py KEYS_LOCK: a new token's insert takes it shared, waiting 2 s at most."""


def _event(tag: str) -> tuple[OutgoingEvent, str, str, str]:
    ip, device = fresh_value(vault_pb2.TOKEN_TYPE_IP), f"a414b-{tag[:12]}"
    user_id = f"u-{tag[:6]}"
    return OutgoingEvent(f"a414b-{tag[:10]}", body(user_id=user_id, ip=ip, device_id=device)), ip, device, user_id


def _stored_since(stack_env: dict[str, str], since: object) -> int:
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT count(*) FROM vault.tokens WHERE created_at >= %s", (since,)).fetchone()
    return int(row[0]) if row else -1


@contextmanager
def _admin(stack_env: dict[str, str]) -> Iterator[psycopg.Connection]:
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as conn:
        yield conn


def _drain(etl: object, until: Callable[[], bool] = lambda: True, reset: Callable[[], None] = lambda: None) -> None:
    drained = threading.Thread(target=etl.wired.consumer.drain, daemon=True)  # type: ignore[attr-defined]
    drained.start()
    deadline = time.monotonic() + 30
    while not until() and time.monotonic() < deadline:
        time.sleep(0.1)
    reset()
    drained.join(timeout=40)
    assert not drained.is_alive(), "the drain did not finish"


def test_a414b_a_tokenize_the_vaults_database_refused_on_the_last_receive_is_a_plain_letter_erase_deletes(
    stack_env: dict[str, str],
    vault: RunningVault,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    etl_env = {
        **etl_harness_env(stack_env, vault.address, visibility_timeout=30, max_receive_count=1),
        "ETL_RECEIVERS": "1",
    }
    event, ip, device, user_id = _event(uuid.uuid4().hex)
    with etl_consumer(etl_env) as etl, _admin(stack_env) as holder:
        etl.wired.tokenizer._client._deadline = TOKENIZE_DEADLINE_SECONDS
        etl.wired.processor.tokenize_retry_seconds = 1  # one retry
        (t0,) = holder.execute("SELECT now()").fetchone() or (None,)
        holder.execute("SELECT pg_advisory_lock(%s)", (KEYS_LOCK,))  # every new token's insert waits 2 s, refused
        try:
            send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), etl_env["ETL_QUEUE_URL"], [event])
            _drain(etl)
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (KEYS_LOCK,))
        letters = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    stored = _stored_since(stack_env, t0)
    assert len(letters) == 1, "no dead letter"
    attributes = letters[0]["MessageAttributes"]
    reason = attributes["reason"]["StringValue"]
    detail = attributes["reason_detail"]["StringValue"]

    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    criteria = f"user_id={user_id}\nip={ip}\ndevice_id={device}\n"
    swept = run_dead_letters_here(
        monkeypatch, capsys, etl_env, "erase", "-", "--yes", "--wait", "0", stdin=criteria, token=operator_token
    )
    left = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl_env["ETL_DLQ_URL"])
    print(
        f"\nA41-4 (a): reason {reason}, detail {detail[:48]!r}..., tokens stored {stored}; erase exit"
        f" {swept.returncode}, letters left {len(left)}; {time.monotonic() - started:.1f} s"
    )
    assert reason == "dependency_unavailable" and stored == 0  # the vault refused, storing nothing
    assert not detail.startswith(TOKENIZE_OUTCOME_UNKNOWN)  # was: "tokenize outcome unknown", kept by erase
    assert swept.returncode == 0, swept.stderr
    assert left == []


def test_a414b_b_a_lost_tokenize_answer_whose_retry_ends_internal_is_dead_lettered_as_unknown(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    started = time.monotonic()
    relay = Relay(vault.address)
    etl_env = {
        **etl_harness_env(stack_env, f"127.0.0.1:{relay.port}", visibility_timeout=30, max_receive_count=1),
        "ETL_RECEIVERS": "1",
    }
    event, _, _, _ = _event(uuid.uuid4().hex)
    name = f"a414b_{uuid.uuid4().hex[:8]}"
    try:
        with etl_consumer(etl_env) as etl, _admin(stack_env) as admin:
            etl.wired.tokenizer._client._deadline = TOKENIZE_DEADLINE_SECONDS
            etl.wired.processor.tokenize_retry_seconds = 20
            # The database refuses every new token's insert with an error of its own: the vault answers INTERNAL.
            admin.execute(
                f"CREATE FUNCTION public.{name}() RETURNS trigger LANGUAGE plpgsql AS"
                " $$BEGIN RAISE EXCEPTION 'refused by the test'; END$$"
            )
            admin.execute(
                f"CREATE TRIGGER {name} BEFORE INSERT ON vault.tokens FOR EACH STATEMENT"
                f" EXECUTE FUNCTION public.{name}()"
            )
            try:
                relay.drop_replies = True  # the first call's answer is lost: DEADLINE_EXCEEDED, an unknown outcome
                send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), etl_env["ETL_QUEUE_URL"], [event])
                lost_at: list[float] = []

                def first_call_over() -> bool:
                    if relay.dropped and not lost_at:
                        lost_at.append(time.monotonic())
                    return bool(lost_at) and time.monotonic() > lost_at[0] + TOKENIZE_DEADLINE_SECONDS + 0.5

                _drain(etl, until=first_call_over, reset=relay.reset_deaf)  # heard again: the retry is answered
            finally:
                admin.execute(f"DROP TRIGGER {name} ON vault.tokens")
                admin.execute(f"DROP FUNCTION public.{name}()")
            letters = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    finally:
        relay.close()
    assert len(letters) == 1, "no dead letter"
    attributes = letters[0]["MessageAttributes"]
    reason = attributes["reason"]["StringValue"]
    detail = attributes["reason_detail"]["StringValue"]
    print(
        f"\nA41-4 (b): answer lost ({relay.dropped} bytes), retry INTERNAL: reason {reason},"
        f" detail {detail[:60]!r}...; {time.monotonic() - started:.1f} s"
    )
    assert reason == "dependency_unavailable"  # was: processing_failed (the retry's INTERNAL taken for a bug)
    assert detail.startswith(TOKENIZE_OUTCOME_UNKNOWN)  # `dead-letters erase` keeps it


def test_a414b_the_vault_says_stored_nothing_only_of_a_tokenize_none_of_whose_inserts_committed(
    stack_env: dict[str, str], vault: RunningVault, client_for: Callable[..., object]
) -> None:
    """The trailer's word is provable: refused before any COMMIT it is said; one type's values committed, not."""
    started = time.monotonic()
    etl = client_for("etl-service", retry=NO_RETRY)
    name = f"a414b_{uuid.uuid4().hex[:8]}"
    tag = uuid.uuid4().hex
    _, ip, device, _ = _event(tag)
    with _admin(stack_env) as admin:
        (t0,) = admin.execute("SELECT now()").fetchone() or (None,)
        admin.execute(
            f"CREATE FUNCTION public.{name}() RETURNS trigger LANGUAGE plpgsql AS"
            " $$BEGIN RAISE EXCEPTION 'refused by the test'; END$$"
        )
        admin.execute(  # the database refuses every new device id; new ips go in
            f"CREATE TRIGGER {name} BEFORE INSERT ON vault.tokens FOR EACH ROW"
            f" WHEN (NEW.token_type = 'device_id') EXECUTE FUNCTION public.{name}()"
        )
        ends = []
        try:
            for columns in (
                [(TokenType.DEVICE_ID, [device])],  # refused before its COMMIT: nothing stored
                [(TokenType.IP, [ip]), (TokenType.DEVICE_ID, [device])],  # the ip committed, then the device refused
                [(TokenType.IP, [ip]), (TokenType.DEVICE_ID, [device])],  # the ip found (stored before): nothing new
            ):
                with pytest.raises(VaultClientError) as failed:
                    etl.tokenize_columns(columns)  # type: ignore[attr-defined]
                ends.append((failed.value.code.name, failed.value.nothing_stored))
        finally:
            admin.execute(f"DROP TRIGGER {name} ON vault.tokens")
            admin.execute(f"DROP FUNCTION public.{name}()")
    stored = _stored_since(stack_env, t0)
    print(f"\nA41-4 the vault's word: {ends}, tokens stored {stored}; {time.monotonic() - started:.1f} s")
    assert ends == [("INTERNAL", True), ("INTERNAL", False), ("INTERNAL", True)] and stored == 1


def test_a414b_c_a_redrive_limit_lowered_while_the_etl_runs_counts_at_once_no_letter_in_clear(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """The redrive limit was read once at start: lowered while the ETL ran, a message on its real last receive was
    postponed as one with receives left, and SQS's next receive moved it to the DLQ in clear, with no reason."""
    started = time.monotonic()
    etl_env = {
        **etl_harness_env(stack_env, vault.address, visibility_timeout=30, max_receive_count=5),
        "ETL_RECEIVERS": "1",
    }
    event, ip, device, _ = _event(uuid.uuid4().hex)
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    with etl_consumer(etl_env) as etl, _admin(stack_env) as holder:  # the ETL reads the limit, 5, at start
        etl.wired.tokenizer._client._deadline = TOKENIZE_DEADLINE_SECONDS
        etl.wired.processor.tokenize_retry_seconds = 1
        dlq_arn = sqs.get_queue_attributes(QueueUrl=etl.dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1"})
        sqs.set_queue_attributes(QueueUrl=etl_env["ETL_QUEUE_URL"], Attributes={"RedrivePolicy": policy})
        holder.execute("SELECT pg_advisory_lock(%s)", (KEYS_LOCK,))  # the vault refuses the event's new values
        try:
            send_events(sqs, etl_env["ETL_QUEUE_URL"], [event])
            _drain(etl)
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (KEYS_LOCK,))
        letters = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    assert len(letters) == 1, "no dead letter"
    reason = letters[0].get("MessageAttributes", {}).get("reason", {}).get("StringValue")
    in_clear = ip in str(letters[0]["Body"]) or device in str(letters[0]["Body"])
    print(
        f"\nredrive limit lowered 5 -> 1: reason {reason}, body in clear {in_clear}; {time.monotonic() - started:.1f} s"
    )
    # was: postponed; SQS's next receive moved it to the DLQ in clear with no reason, where it stayed until a take-back
    # sealed it as `crash_loop` (measured: the drain's own take-back did, 14.5 s)
    assert reason == "dependency_unavailable" and not in_clear
