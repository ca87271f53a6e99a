"""A dead letter moved back to the source queue as it is (AWS's DLQ redrive) is never sealed again.

Insider round 9, Break 8: `StartMessageMoveTask` (the console's "Start DLQ redrive") moves DLQ
messages to the source queue with their attributes; the ETL read an envelope as an event with
missing fields and sealed it inside a second envelope, where `dead-letters erase` (one layer)
missed the person and exited 0. ministack has no StartMessageMoveTask: the tests move messages
as it does (receive, send body and attributes to the source, delete). Real SQS (ministack),
OpenBao, Postgres and the vault.

Synthetic TEST-NET values only; each check is reduced to a boolean before it is asserted.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import hvac
import psycopg
import pytest

from devstack.events import OutgoingEvent, send_events
from devstack.sqs import sqs_client
from etl_service.adapters.transit_sealer import PROBE_CIPHERTEXT, TransitSealer
from etl_service.errors import Misconfigured
from etl_service.service.ports import BodySealer
from etl_service.service.returned_letters import RETURNED_DETAIL
from etl_service.service.sealing import NOT_KEPT_NO_KEY, dead_letter_body
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters, run_dead_letters
from tests.integration.forged_letters import clear_in, forged_in_clear, person
from tests.malformed_samples import GOOD


def move_to_source(sqs: Any, dlq_url: str, queue_url: str) -> int:
    """What SQS's DLQ redrive does: every DLQ message to the source queue, body and attributes as they are."""
    moved = 0
    while batch := sqs.receive_message(
        QueueUrl=dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=60
    ).get("Messages", []):
        for message in batch:
            sqs.send_message(
                QueueUrl=queue_url, MessageBody=message["Body"], MessageAttributes=message["MessageAttributes"]
            )
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    return moved


def refused_event(values: dict[str, str]) -> str:
    """A well-formed event holding `values`, refused for its device type (so its dead letter is sealed)."""
    return json.dumps({**GOOD, **values, "device_type": "toaster"})


def sealed_layers(sealer: BodySealer, text: str, depth: int) -> list[str]:
    """`text` sealed `depth` times, each envelope inside the next: the envelopes from the innermost out."""
    layers: list[str] = []
    for _ in range(depth):
        text = sealer.seal([text])[0]
        layers.append(text)
    return layers


def send_forged(sqs: Any, queue_url: str, event_id: str, body: str) -> None:
    """As a hostile producer sends it: with a reason of the ETL's, as a dead letter moved back would carry."""
    attributes = {"event_id": event_id, "reason": "not_json"}
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=body,
        MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
    )


def test_a_forged_envelope_with_clear_text_for_ciphertext_is_sealed_and_a_genuine_one_still_goes_back(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """Attack 10, finding 3: taken for the ETL's own by its shape, a forged envelope went to the DLQ as it was.

    Now Transit proves a returned letter's ciphertext (rewrap, which reveals nothing) before it goes on.
    """
    tag = uuid.uuid4().hex[:8]
    values, victim = person(tag), person(f"{tag}v")
    refused = refused_event(values)
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    sqs = sqs_client(endpoint)
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        send_events(sqs, etl.queue_url, [OutgoingEvent(f"{tag}-refused", refused)])
        assert etl.wired.consumer.drain().quarantined == 1
        [original] = all_dead_letters(endpoint, etl.dlq_url)
        assert move_to_source(sqs, etl.dlq_url, etl.queue_url) == 1
        send_forged(sqs, etl.queue_url, f"{tag}-forged", forged_in_clear(victim))
        drained = etl.wired.consumer.drain()

    assert (drained.returned_to_dlq, drained.quarantined, dict(drained.reasons)) == (1, 1, {"missing_field": 1})
    by_event = {m["MessageAttributes"]["event_id"]["StringValue"]: m for m in all_dead_letters(endpoint, etl.dlq_url)}
    assert sorted(by_event) == [f"{tag}-forged", f"{tag}-refused"]
    same_body = by_event[f"{tag}-refused"]["Body"] == original["Body"]
    assert same_body, "the genuine returned letter did not go back unchanged"
    forged_letter = by_event[f"{tag}-forged"]
    assert forged_letter["MessageAttributes"]["reason"]["StringValue"] == "missing_field"
    assert clear_in([forged_letter], victim) == [], "a forged envelope put a person's values in the DLQ in clear"

    # Sealed: the operator opens the outer layer, whose inner 'ciphertext' OpenBao refuses. The erasure
    # names it as could not be opened (exit 3, never a silent 0), without a word of the victim's.
    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    criteria = "".join(f"{kind}={value}\n" for kind, value in victim.items())
    swept = run_dead_letters(env, "erase", "-", "--yes", "--wait", "5", stdin=criteria, token=operator_token)
    assert swept.returncode == 3, swept.stderr
    assert forged_letter["MessageId"] in swept.stderr, swept.stderr
    leaked = [kind for kind, value in victim.items() if value in swept.stdout + swept.stderr]
    assert leaked == []


def test_a_dead_letter_moved_back_to_the_source_returns_to_the_dlq_unchanged_and_is_not_sealed_again(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    tag = uuid.uuid4().hex[:8]
    values = person(tag)
    refused = refused_event(values)
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    sqs = sqs_client(endpoint)
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        send_events(sqs, etl.queue_url, [OutgoingEvent(f"{tag}-refused", refused)])
        first = etl.wired.consumer.drain()
        assert (first.loaded, first.quarantined) == (0, 1)
        [original] = all_dead_letters(endpoint, etl.dlq_url)

        assert move_to_source(sqs, etl.dlq_url, etl.queue_url) == 1  # the operator's "Start DLQ redrive"
        # An envelope-like body that is not exactly the ETL's (an extra field): an event like any
        # other - refused and sealed, never passed to the DLQ in clear.
        lookalike = json.loads(original["Body"]) | {"ip": values["ip"]}
        send_events(sqs, etl.queue_url, [OutgoingEvent(f"{tag}-lookalike", json.dumps(lookalike))])
        second = etl.wired.consumer.drain()

    letters = all_dead_letters(endpoint, etl.dlq_url)
    by_event = {m["MessageAttributes"]["event_id"]["StringValue"]: m for m in letters}
    assert sorted(by_event) == [f"{tag}-lookalike", f"{tag}-refused"]
    back = by_event[f"{tag}-refused"]
    same_body = back["Body"] == original["Body"]
    assert same_body, "the dead letter came back sealed again (an envelope inside an envelope)"
    first = original["MessageAttributes"]
    fixed_detail = {"reason_detail": {**first["reason_detail"], "StringValue": RETURNED_DETAIL}}
    assert back["MessageAttributes"] == first | fixed_detail  # reason, source id and time; the detail is in its row
    assert original["MessageAttributes"]["reason"]["StringValue"] == "unknown_device_type"
    lookalike_letter = by_event[f"{tag}-lookalike"]
    assert lookalike_letter["MessageAttributes"]["reason"]["StringValue"] == "missing_field"
    sealed = values["ip"] not in lookalike_letter["Body"]
    assert sealed, "an envelope-like body went to the DLQ in clear"

    # Counted apart from refusals: no second quarantine row, no second count under its reason.
    assert (second.quarantined, second.returned_to_dlq, dict(second.reasons)) == (1, 1, {"missing_field": 1})
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT event_id, reason, detail FROM etl_quarantine WHERE event_id LIKE %s ORDER BY event_id",
            (f"{tag}-%",),
        ).fetchall()
    assert [row[:2] for row in rows] == [
        (f"{tag}-lookalike", "missing_field"),
        (f"{tag}-refused", "unknown_device_type"),
    ]
    assert rows[1][2] == first["reason_detail"]["StringValue"]  # the first detail, kept in the original's row

    # The erasure's DLQ step finds the person in both: the returned letter and the nested lookalike.
    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    criteria = "".join(f"{kind}={value}\n" for kind, value in values.items())
    swept = run_dead_letters(env, "erase", "-", "--yes", "--wait", "5", stdin=criteria, token=operator_token)
    assert swept.returncode == 0, swept.stderr
    assert "deleted: 2" in swept.stdout, swept.stdout
    assert all_dead_letters(endpoint, etl.dlq_url) == []
    leaked = [kind for kind, value in values.items() if value in swept.stdout + swept.stderr]
    assert leaked == []


def test_an_etl_switched_to_discard_cannot_prove_a_sealed_dead_letter_and_keeps_no_body(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """Sealed by the ETL, then redriven to an ETL running with ETL_DLQ_BODIES=discard (no OpenBao access).

    Review B, finding 1 had it go back with its sealed body. But nothing can prove its ciphertext
    there, and a forged one went on unsealed too (attack 10, finding 3): both are now refused like
    any message and, as discard mode does with every body, not kept. The person is in neither.
    """
    tag = uuid.uuid4().hex[:8]
    values = person(tag)
    refused = refused_event(values)
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    sqs = sqs_client(endpoint)
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        send_events(sqs, etl.queue_url, [OutgoingEvent(f"{tag}-refused", refused)])
        assert etl.wired.consumer.drain().quarantined == 1
    assert len(all_dead_letters(endpoint, etl.dlq_url)) == 1
    assert move_to_source(sqs, etl.dlq_url, etl.queue_url) == 1

    send_forged(sqs, etl.queue_url, f"{tag}-forged", forged_in_clear(values))

    discarding = {k: v for k, v in env.items() if not k.startswith("ETL_DLQ_SEAL_")} | {"ETL_DLQ_BODIES": "discard"}
    with etl_consumer(discarding) as etl:
        drained = etl.wired.consumer.drain()
    assert (drained.quarantined, drained.returned_to_dlq) == (2, 0)
    letters = all_dead_letters(endpoint, etl.dlq_url)
    assert sorted(m["MessageAttributes"]["reason"]["StringValue"] for m in letters) == ["missing_field"] * 2
    assert [m["Body"] for m in letters] == [dead_letter_body(None, NOT_KEPT_NO_KEY, None)] * 2
    assert clear_in(letters, values) == []


DEVICE_UUID = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
FORGED_DETAIL = f"Jane Doe, phone 555-0100, device {DEVICE_UUID}"


def test_a_forged_envelope_puts_no_text_of_its_senders_in_dlq_attributes_quarantine_or_log(
    stack_env: dict[str, str], vault: RunningVault, caplog: pytest.LogCaptureFixture
) -> None:
    """Review B, finding 2: an exact envelope any producer can write, with a detail and source id of its own."""
    tag = uuid.uuid4().hex[:8]
    attributes = {
        "event_id": f"{tag}-forged",
        "reason": "unknown_device_type",
        "reason_detail": FORGED_DETAIL,
        "source_message_id": DEVICE_UUID,
    }
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    sqs = sqs_client(endpoint)
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        sealer = etl.wired.sealer
        assert sealer is not None
        forged = sealer.seal(["any text"])[0]  # a genuine ciphertext (a letter it saw), attributes of its own
        sqs.send_message(
            QueueUrl=etl.queue_url,
            MessageBody=forged,
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
        )
        with caplog.at_level(logging.DEBUG, logger="etl_service"):
            drained = etl.wired.consumer.drain()
    assert drained.returned_to_dlq == 1  # taken for one of the ETL's own: the case in point
    assert any("came back to the source queue" in r.getMessage() for r in caplog.records)  # the log is read
    [letter] = all_dead_letters(endpoint, etl.dlq_url)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute("SELECT * FROM etl_quarantine WHERE event_id = %s", (f"{tag}-forged",)).fetchall()
    places = {
        "DLQ attributes": json.dumps(letter["MessageAttributes"]),
        "etl_quarantine": repr(rows),
        "the ETL's log": "".join(str(vars(r)) for r in caplog.records if r.name.startswith("etl_service")),
    }
    found = {
        place: [text for text in ("jane doe", "555-0100", DEVICE_UUID.lower()) if text in seen.lower()]
        for place, seen in places.items()
    }
    assert found == {place: [] for place in places}


def test_erase_opens_envelopes_sealed_inside_envelopes_and_reasonless_envelopes(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """What an older ETL left in the DLQ (a letter sealed twice), and an envelope moved there by hand."""
    tag = uuid.uuid4().hex[:8]
    values = person(tag)
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    sqs = sqs_client(endpoint)
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        sealer = etl.wired.sealer
        assert sealer is not None
        # the old ETL's second envelope (reason missing_field), and one five envelopes deep
        envelope, nested, *_, too_deep = sealed_layers(sealer, refused_event(values), 5)
    planted = {f"{tag}-nested": (nested, "missing_field"), f"{tag}-reasonless": (envelope, None)}
    for event_id, (text, reason) in planted.items():  # the reasonless one: moved back by hand, attributes lost
        attributes: dict[str, Any] = {"event_id": {"DataType": "String", "StringValue": event_id}}
        if reason:
            attributes["reason"] = {"DataType": "String", "StringValue": reason}
        sqs.send_message(QueueUrl=etl.dlq_url, MessageBody=text, MessageAttributes=attributes)

    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    nested_id = next(m["MessageId"] for m in all_dead_letters(endpoint, etl.dlq_url) if m["Body"] == nested)
    shown = run_dead_letters(env, "show", nested_id, token=operator_token)
    assert shown.returncode == 0, shown.stderr
    assert "itself a dead-letter envelope" in shown.stderr
    opened = values["device_id"] in shown.stdout  # the operator sees the original, not another ciphertext
    assert opened

    criteria = "".join(f"{kind}={value}\n" for kind, value in values.items())
    swept = run_dead_letters(env, "erase", "-", "--yes", "--wait", "5", stdin=criteria, token=operator_token)
    assert swept.returncode == 0, swept.stderr
    assert "deleted: 2" in swept.stdout and "left untouched: 0" in swept.stdout, swept.stdout
    assert all_dead_letters(endpoint, etl.dlq_url) == []

    # Five envelopes deep: not opened to the end, so not checked - counted, exit 3, never a silent 0.
    deep_id = sqs.send_message(
        QueueUrl=etl.dlq_url,
        MessageBody=too_deep,
        MessageAttributes={"reason": {"DataType": "String", "StringValue": "missing_field"}},
    )["MessageId"]
    deep = run_dead_letters(env, "erase", "-", "--yes", "--wait", "5", stdin=criteria, token=operator_token)
    assert deep.returncode == 3, deep.stderr
    assert "could not be opened: 1" in deep.stderr and deep_id in deep.stderr
    texts = swept.stdout + swept.stderr + deep.stdout + deep.stderr
    leaked = [kind for kind, value in values.items() if value in texts]
    assert leaked == []


def test_show_stops_where_erase_does_at_the_depth_limit_and_at_a_tampered_inner_layer(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """show and erase open envelopes with one routine (review B, finding 4): same layer, same reason.

    Five envelopes deep, show used to print the fourth layer (still an envelope) and exit 0 without a
    word, while erase counted the letter as could not be opened. Now show prints the layers it opened
    and says the next is nested deeper than 4, not opened (exit 1). An inner layer naming another
    Transit key is tampering for both: show refuses it naming that key, erase counts it tampered.
    """
    tag = uuid.uuid4().hex[:8]
    values = person(tag)
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    sqs = sqs_client(endpoint)
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        sealer = etl.wired.sealer
        assert sealer is not None
        too_deep = sealed_layers(sealer, refused_event(values), 5)[-1]
        planted_inside = sealer.seal([dead_letter_body(PROBE_CIPHERTEXT, None, "tokenvault-kek")])[0]
    reason: dict[str, Any] = {"reason": {"DataType": "String", "StringValue": "missing_field"}}
    deep_id = sqs.send_message(QueueUrl=etl.dlq_url, MessageBody=too_deep, MessageAttributes=reason)["MessageId"]
    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()

    shown = run_dead_letters(env, "show", deep_id, token=operator_token)
    assert shown.returncode == 1, shown.stderr
    assert "nested deeper than 4: not opened" in shown.stderr, shown.stderr
    assert shown.stderr.count("itself a dead-letter envelope") == 3  # layers 2, 3 and 4 opened, and printed
    never_opened = not any(value in shown.stdout + shown.stderr for value in values.values())
    assert never_opened

    planted_id = sqs.send_message(QueueUrl=etl.dlq_url, MessageBody=planted_inside, MessageAttributes=reason)[
        "MessageId"
    ]
    shown = run_dead_letters(env, "show", planted_id, token=operator_token)
    assert shown.returncode == 1, shown.stderr
    assert "layer 2 of dead letter" in shown.stderr and "names Transit key 'tokenvault-kek'" in shown.stderr
    assert "tampering" in shown.stderr, shown.stderr

    criteria = "".join(f"{kind}={value}\n" for kind, value in values.items())
    swept = run_dead_letters(env, "erase", "-", "--wait", "5", stdin=criteria, token=operator_token)
    assert swept.returncode == 3, swept.stderr
    assert "could not be opened: 1" in swept.stderr and deep_id in swept.stderr
    assert "tampered: 1" in swept.stderr and planted_id in swept.stderr


def test_an_etl_whose_openbao_policy_cannot_rewrap_refuses_to_start(stack_env: dict[str, str]) -> None:
    """An ETL upgraded while its policy still allows encrypt only: stopped at start, naming transit/rewrap.

    Else the first returned letter would stop it mid-run (the proof is asked only then).
    """
    root = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    policy = root.sys.read_policy("tokenvault-etl")["data"]["rules"]
    root.sys.create_or_update_policy(
        "tokenvault-etl", 'path "transit/encrypt/tokenvault-dead-letters" { capabilities = ["update"] }'
    )
    try:
        sealer = TransitSealer(
            stack_env["VAULT_ADDR"], stack_env["DLQ_SEAL_ROLE_ID"], Path(stack_env["DLQ_SEAL_SECRET_ID_FILE"])
        )
        with pytest.raises(Misconfigured, match="transit/rewrap/<key>"):
            sealer.check_access()
    finally:
        root.sys.create_or_update_policy("tokenvault-etl", policy)
    TransitSealer(
        stack_env["VAULT_ADDR"], stack_env["DLQ_SEAL_ROLE_ID"], Path(stack_env["DLQ_SEAL_SECRET_ID_FILE"])
    ).check_access()  # the policy the stack writes (config/vault/tokenvault-etl.hcl) passes


def test_an_etl_whose_openbao_policy_predates_the_take_back_key_refuses_to_start(stack_env: dict[str, str]) -> None:
    """Review 20, R20-13: upgraded without the policy's take-back key lines, the ETL stops at start, naming the key.

    Else its first take-back would stop it mid-run (run mode's every 5 minutes), or it would find
    no take-back's tag valid and load each taken-back event under the take-back's date.
    """
    root = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    policy = root.sys.read_policy("tokenvault-etl")["data"]["rules"]
    before = policy.split('path "transit/hmac/tokenvault-take-back-times"')[0]
    assert 'tokenvault-take-back-times" {' not in before and "transit/rewrap/tokenvault-dead-letters" in before
    root.sys.create_or_update_policy("tokenvault-etl", before)
    try:
        sealer = TransitSealer(
            stack_env["VAULT_ADDR"], stack_env["DLQ_SEAL_ROLE_ID"], Path(stack_env["DLQ_SEAL_SECRET_ID_FILE"])
        )
        with pytest.raises(Misconfigured, match=r"tokenvault-take-back-times.*tokenvault-etl\.hcl"):
            sealer.check_access()
    finally:
        root.sys.create_or_update_policy("tokenvault-etl", policy)
