"""The ETL's own dead letters back on the source queue: recognised strictly, proven by Transit, sent back unchanged."""

from __future__ import annotations

import ast
import base64
import importlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import etl_service
from etl_service.bootstrap import _sealer
from etl_service.config import EtlConfig
from etl_service.domain.messages import QueueMessage
from etl_service.service.batch import BatchProcessor
from etl_service.service.outcomes import CRASH_LOOP
from etl_service.service.returned_letters import (
    KNOWN_REASONS,
    RETURNED,
    RETURNED_DETAIL,
    claimed_ciphertext,
    is_own_envelope,
    returned_letter,
)
from etl_service.service.sealing import NOT_KEPT_NO_KEY, NOT_KEPT_TOO_LARGE, dead_letter_body
from tests.unit.etl_builders import SENT_MS, RecordingSealer, good, message, minimal_etl_env
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer

KEY = "test-key"  # RecordingSealer's
CIPHERTEXT = "vault:v1:" + base64.b64encode(bytes(range(40))).decode()
SEALED = dead_letter_body(CIPHERTEXT, None, KEY)
FIELDS = {"format": "tokenvault-dead-letter/1", "sealed_body": CIPHERTEXT, "key": KEY, "note": None}
ORIGIN_ID = "0f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b"
ATTRIBUTES = (
    ("reason", "unknown_device_type"),
    ("reason_detail", "device_type must be one of android, ios"),
    ("source_message_id", ORIGIN_ID),
    ("source_sent_timestamp", str(SENT_MS - 60_000)),
)


def moved_back(body: str = SEALED, attributes: tuple[tuple[str, str], ...] = ATTRIBUTES) -> QueueMessage:
    return QueueMessage("m-copy", "r-copy", body, SENT_MS, 1, "evt-7", dead_letter_attributes=attributes)


def test_the_etls_own_envelopes_are_recognised() -> None:
    assert is_own_envelope(SEALED, KEY, {CIPHERTEXT})
    assert is_own_envelope(dead_letter_body(None, NOT_KEPT_TOO_LARGE, None), KEY)
    assert claimed_ciphertext(SEALED, KEY) == CIPHERTEXT


def test_a_sealed_envelope_is_ours_only_once_transit_proved_its_ciphertext() -> None:
    """Attack 10, finding 3: the shape is only a claim; any base64 (clear PII under one line of it) has it."""
    assert not is_own_envelope(SEALED, KEY)
    assert not is_own_envelope(SEALED, KEY, {"vault:v1:" + base64.b64encode(bytes(40)).decode()})
    assert returned_letter(moved_back(), KEY) is None


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({**FIELDS, "ip": 1}),
        json.dumps({k: v for k, v in FIELDS.items() if k != "note"}),  # a field missing
        json.dumps(FIELDS, indent=1),
        SEALED.replace('"note": null', '"note": "203.0.113.9", "note": null'),  # a duplicate key hides text
        SEALED.replace('"key"', '"k\\u0065y"'),  # an escape
        dead_letter_body(CIPHERTEXT, None, "other-key"),  # another Transit key: tampered, not ours
        dead_letter_body(CIPHERTEXT, "a note", KEY),
        dead_letter_body("vault:v1:att9dev0098", None, KEY),  # too short for nonce and tag
        dead_letter_body("vault:v1:" + "!" * 60, None, KEY),
        dead_letter_body(None, "203.0.113.9", None),  # not one of the ETL's notes
        dead_letter_body(None, NOT_KEPT_TOO_LARGE, KEY),
        dead_letter_body(CIPHERTEXT, None, None),
        json.dumps({**good(1), "format": "tokenvault-dead-letter/1"}),
    ],
)
def test_anything_else_is_not_an_envelope_of_ours(body: str) -> None:
    assert not is_own_envelope(body, KEY, {CIPHERTEXT})
    assert claimed_ciphertext(body, KEY) is None  # not even asked about


def test_without_a_sealing_key_no_sealed_envelope_is_ours() -> None:
    assert not is_own_envelope(SEALED, None, {CIPHERTEXT})


def test_a_returned_letter_keeps_the_attributes_of_its_first_dead_lettering() -> None:
    returned = returned_letter(moved_back(), KEY, {CIPHERTEXT})
    assert returned is not None
    assert (returned.reason, returned.detail) == (ATTRIBUTES[0][1], RETURNED_DETAIL)  # the first is in its row
    assert (returned.origin.message_id, returned.origin.sent_timestamp_ms) == (ORIGIN_ID, SENT_MS - 60_000)
    assert returned.quarantine_record().event_id == "evt-7"


def test_attributes_that_are_not_the_etls_are_replaced() -> None:
    odd = (("reason", "u-att9-0008"), ("source_message_id", "203.0.113.9"))
    returned = returned_letter(moved_back(attributes=odd), KEY, {CIPHERTEXT})
    assert returned is not None and returned.reason == RETURNED
    assert returned.origin.message_id == "m-copy"  # an id SQS would not issue is not believed
    assert returned_letter(moved_back(body=json.dumps(good(1))), KEY) is None


def test_a_crash_loop_letter_moved_back_keeps_its_reason() -> None:
    # crash_loop was missing from KNOWN_REASONS: a DLQ redrive of such a letter came back as dead_letter_returned.
    returned = returned_letter(moved_back(attributes=(("reason", CRASH_LOOP),)), KEY, {CIPHERTEXT})
    assert returned is not None and returned.reason == CRASH_LOOP


def test_the_batch_sends_it_back_unchanged_and_counts_it_apart() -> None:
    queue, store, sealer = FakeQueue(), FakeLoginStore(), RecordingSealer()
    sealer.genuine.add(CIPHERTEXT)
    outcome = BatchProcessor(queue, FakeTokenizer(), store, sealer=sealer).process([moved_back(), message(2, "oops")])
    assert sealer.asked == [[CIPHERTEXT]]  # one proof for the batch
    assert sealer.sealed == ["oops"]  # the envelope is not sealed again
    assert queue.dead_lettered == [(ORIGIN_ID, "unknown_device_type"), ("m2", "not_json")]
    assert queue.dead_letter_bodies[0] == SEALED
    assert (outcome.quarantined, outcome.returned_to_dlq, dict(outcome.reasons)) == (1, 1, {"not_json": 1})
    assert store.quarantine["evt-7"].sqs_message_id == "m-copy"  # a row it adds names the copy SQS delivered
    assert ("delete", "m-copy") in queue.actions


def test_a_letter_whose_reading_fails_goes_on_its_last_receive_as_it_is_not_sealed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Why kept_bodies asks is_own_envelope again: returned_letter failed (a bug), processing_failed follows.

    A not-kept envelope goes as it is; a sealed one, proven by nothing on that path, is sealed again.
    """

    def broken(message: QueueMessage, key_name: str | None, authentic: frozenset[str]) -> None:
        assert is_own_envelope(message.body, key_name, authentic)
        raise KeyError("a bug past the envelope check")

    monkeypatch.setattr("etl_service.service.validate_step.returned_letter", broken)
    not_kept = dead_letter_body(None, NOT_KEPT_TOO_LARGE, None)
    for body, sealed_again in ((not_kept, []), (SEALED, [SEALED])):
        queue, sealer = FakeQueue(), RecordingSealer()
        sealer.genuine.add(CIPHERTEXT)
        copy = replace(moved_back(body=body), receive_count=3)
        BatchProcessor(queue, FakeTokenizer(), FakeLoginStore(), sealer=sealer, max_receive_count=3).process([copy])
        assert queue.dead_lettered == [("m-copy", "processing_failed")]
        assert sealer.sealed == sealed_again
        assert queue.dead_letter_bodies == [body] if not sealed_again else queue.dead_letter_bodies != [body]


def test_a_forged_envelope_is_refused_and_sealed_like_any_other_message() -> None:
    """Attack 10, finding 3: clear text base64-encoded as its 'ciphertext' went to the DLQ as it was."""
    forged = dead_letter_body("vault:v1:" + base64.b64encode(b'{"ip": "203.0.113.7"}' * 2).decode(), None, KEY)
    queue, store, sealer = FakeQueue(), FakeLoginStore(), RecordingSealer()
    sealer.genuine.add(CIPHERTEXT)
    outcome = BatchProcessor(queue, FakeTokenizer(), store, sealer=sealer).process([moved_back(body=forged)])
    assert sealer.sealed == [forged]  # sealed inside an envelope of its own
    assert queue.dead_letter_bodies != [forged] and queue.dead_lettered == [("m-copy", "missing_field")]
    assert (outcome.returned_to_dlq, outcome.quarantined) == (0, 1)


def test_ordinary_events_ask_transit_nothing() -> None:
    queue, sealer = FakeQueue(), RecordingSealer()
    BatchProcessor(queue, FakeTokenizer(), FakeLoginStore(), sealer=sealer).process(
        [message(1, good(1)), message(2, "oops")]
    )
    assert sealer.asked == []


def test_with_openbao_down_a_batch_holding_an_envelope_is_postponed_and_nothing_is_lost() -> None:
    queue, sealer = FakeQueue(), RecordingSealer()
    sealer.down = True
    outcome = BatchProcessor(queue, FakeTokenizer(), FakeLoginStore(), sealer=sealer).process(
        [moved_back(), message(1, good(1))]
    )
    assert (outcome.retried, outcome.failed_dependency) == (2, "openbao")
    assert queue.dead_lettered == [] and not [a for a in queue.actions if a[0] == "delete"]


DEVICE_UUID = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
FORGED_DETAIL = f"Jane Doe, phone 555-0100, device {DEVICE_UUID}"


def _forged(claimed_id: str, caplog: pytest.LogCaptureFixture) -> tuple[str, str, str]:
    """A forged exact envelope, processed: what reached the DLQ's attributes, the quarantine rows, the log."""
    forged = (("reason", "unknown_device_type"), ("reason_detail", FORGED_DETAIL), ("source_message_id", claimed_id))
    queue, store, sealer = FakeQueue(), FakeLoginStore(), RecordingSealer()
    sealer.genuine.add(CIPHERTEXT)  # a genuine ciphertext, with attributes of a hostile sender's choosing
    with caplog.at_level(logging.DEBUG, logger="etl_service"):
        outcome = BatchProcessor(queue, FakeTokenizer(), store, sealer=sealer).process([moved_back(attributes=forged)])
    assert outcome.returned_to_dlq == 1
    assert queue.dead_letter_details == [RETURNED_DETAIL]
    assert any("came back to the source queue" in r.getMessage() for r in caplog.records)  # the log is read
    logged = "".join(str(vars(r)) for r in caplog.records if r.name.startswith("etl_service"))
    return repr((queue.dead_lettered, queue.dead_letter_details)), repr(store.quarantine), logged


def test_a_forged_envelope_puts_no_text_of_its_senders_in_the_dlq_the_quarantine_or_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Review B, finding 2: the detail and source id of a forged envelope went on as they were."""
    for place in _forged(DEVICE_UUID, caplog):
        found = [text for text in ("jane doe", "555-0100", DEVICE_UUID.lower()) if text in place.lower()]
        assert found == []


def test_a_uuid_shaped_source_id_is_kept_for_the_dlq_but_never_logged_nor_put_in_a_new_row(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The shape SQS issues: it keys the original's row and `resend`; no further than an event_id attribute goes."""
    dlq, rows, logged = _forged(DEVICE_UUID.lower(), caplog)
    assert DEVICE_UUID.lower() in dlq
    assert DEVICE_UUID.lower() not in rows and DEVICE_UUID.lower() not in logged


def test_an_etl_switched_to_discard_cannot_prove_a_sealed_letter_and_keeps_no_body(tmp_path: Path) -> None:
    """In discard mode the ETL has no OpenBao access: a sealed envelope moved back is only a claim.

    Review B, finding 1 had it go back with its body; attack 10, finding 3 showed that any producer
    can write one with clear text for its 'ciphertext'. Unproven, it is refused like any message and,
    as discard mode does with every body, not kept (the original's quarantine row stays).
    """
    env = {**minimal_etl_env(tmp_path, "http://127.0.0.1:9/1/q"), "ETL_DLQ_SEAL_KEY": KEY}
    sealer = _sealer(EtlConfig.from_env(env))  # what the ETL wires in discard mode
    queue, store = FakeQueue(), FakeLoginStore()
    outcome = BatchProcessor(queue, FakeTokenizer(), store, sealer=sealer).process([moved_back()])
    assert queue.dead_lettered == [("m-copy", "missing_field")]
    assert queue.dead_letter_bodies == [dead_letter_body(None, NOT_KEPT_NO_KEY, None)]
    assert (outcome.returned_to_dlq, outcome.quarantined) == (0, 1)
    assert ("delete", "m-copy") in queue.actions


def test_every_reason_the_etl_dead_letters_with_is_known() -> None:
    """Each Rejection(...) in etl_service, its reason resolved in its module: a literal, a constant, a table."""
    raised = _reasons_raised()
    assert {where.split(":")[0] for where in raised} >= {"validation.py", "batch.py"}, raised  # the scan found them
    unknown = {where: values - KNOWN_REASONS for where, values in raised.items() if values - KNOWN_REASONS}
    assert unknown == {}


def _reasons_raised() -> dict[str, set[str]]:
    package = Path(etl_service.__file__).parent  # wherever the tests run from
    raised: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        calls = [
            node
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Rejection"
        ]
        if not calls:
            continue
        module = importlib.import_module(".".join(path.relative_to(package.parent).with_suffix("").parts))
        for call in calls:
            raised[f"{path.name}:{call.lineno}"] = _reason_values(call.args[0], vars(module))
    return raised


def _reason_values(node: ast.expr, namespace: dict[str, Any]) -> set[str]:
    """The reasons `node` can be: a table's (`_REASONS[rule]`) are all its values; an existing rejection's
    reason passed on (`rejection.reason`, a local) adds none."""
    if isinstance(node, ast.Subscript):
        return set(_resolved(node.value, namespace).values())
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id not in namespace:
        assert node.attr == "reason", ast.unparse(node)
        return set()
    return {_resolved(node, namespace)}


def _resolved(node: ast.expr, namespace: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return namespace[node.id]
    if isinstance(node, ast.Attribute):
        return getattr(_resolved(node.value, namespace), node.attr)
    raise AssertionError(f"a reason this test cannot resolve: {ast.unparse(node)}")
