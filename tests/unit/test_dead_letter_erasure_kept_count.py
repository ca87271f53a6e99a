"""`dead-letters erase` counts a "tokenize outcome unknown" letter it leaves in the DLQ as left, never as deleted.

Walk 46, W46-3: with one such letter of the person, stdout said "holding the person's values, deleted: 1" (the dry
run "would be deleted: 1") while stderr said it was left in the DLQ, and it was: the count README tells the operator
to record with the erasure request was wrong. The same letters through a real ETL, SQS and vault:
tests/integration/test_a414_tokenize_answer_lost_retried.py.
"""

from __future__ import annotations

import argparse
import io
import json

import pytest

from etl_service.adapters.dead_letter import to_dead_letter
from etl_service.entrypoints.dead_letter_erasure import run_erase
from etl_service.service.outcomes import DEPENDENCY_UNAVAILABLE, TOKENIZE_OUTCOME_UNKNOWN
from etl_service.service.sealing import dead_letter_body
from tests.unit.test_dead_letter_erasure_per_letter import ListedOnce

KEY = "tokenvault-dead-letters"


def _letter(message_id: str, detail: str) -> object:
    attributes = {
        "reason": {"DataType": "String", "StringValue": DEPENDENCY_UNAVAILABLE},
        "reason_detail": {"DataType": "String", "StringValue": detail},
    }
    raw = {
        "MessageId": message_id,
        "ReceiptHandle": f"rh-{message_id}",
        "Body": dead_letter_body(f"vault:v1:{message_id}", None, KEY),
        "MessageAttributes": attributes,
    }
    return to_dead_letter(raw)


@pytest.mark.parametrize("yes", [True, False])
def test_a_letter_left_for_its_unknown_tokenize_outcome_is_counted_left_not_deleted(
    yes: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    body = json.dumps({"user_id": "u-w46-3", "ip": "198.51.100.43", "device_id": "d-w46-3"})
    other = json.dumps({"user_id": "u-other", "ip": "198.51.100.44", "device_id": "d-other"})
    texts = {"vault:v1:m-plain": body, "vault:v1:m-unknown": body, "vault:v1:m-other": other}
    unknown = f"{TOKENIZE_OUTCOME_UNKNOWN}; its batch failed for a dependency on every receive: vault"
    dlq = ListedOnce(
        [
            _letter("m-plain", "its batch failed for a dependency on every receive: vault"),  # type: ignore[list-item]
            _letter("m-unknown", unknown),  # type: ignore[list-item]
            _letter("m-other", "its batch failed for a dependency on every receive: vault"),  # type: ignore[list-item]
        ]
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("user_id=u-w46-3\n"))
    code = run_erase(argparse.Namespace(stdin=["-"], yes=yes, wait=0.0), dlq, KEY, texts.__getitem__)  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    action = "deleted" if yes else "would be deleted (dry run: add --yes to delete)"
    assert code == 3 and dlq.deleted == (["m-plain"] if yes else [])
    assert "dead letters checked: 3" in out
    assert f"holding the person's values, {action}: 1\n" in out, out  # was 2: the kept letter counted deleted
    assert "holding the person's values, tokenize outcome unknown (named below), left in the DLQ: 1" in out, out
    assert "left untouched: 1" in out
    assert "Left in the DLQ, not deleted" in err and "m-unknown" in err
