"""`dead-letters erase` reads a letter without a kept body once too, as its listing read it.

After test_erasure_reads_each_body_once.py (review 12, finding 9) an envelope holding no sealed
body was still read twice: once by the listing, and again by `in_clear` (a helper of
own_dead_letters, since removed, parsed the raw body anew) to tell a body-less envelope of the ETL's (counted
as without a kept body) from a body merely shaped like one (in clear: its text was read). The
listing now records the answer with the letter (DeadLetter.shaped_as_written), and the decision
is the same: the ETL's own body-less envelopes are counted, a loose one is an original in clear.
Real SQS (ministack); the sweep runs in-process so the envelope reader (sealing.read_dead_letter_body's
JSON parse) can be counted. No body here is sealed: nothing is sent to OpenBao. Synthetic values only.
"""

from __future__ import annotations

import argparse
import io
import json

import pytest

from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.adapters.transit_sealer import DEAD_LETTER_KEY
from etl_service.entrypoints.dead_letter_erasure import run_erase
from etl_service.service.sealing import DEAD_LETTER_FORMAT, NOT_KEPT_NO_KEY, NOT_KEPT_TOO_LARGE, dead_letter_body
from tests.integration.counted_parses import WRONG_TYPE, count_envelope_parses, fresh_queues


def never_decrypt(ciphertext: str) -> str:
    raise AssertionError("no letter here holds a sealed body")


def test_erase_reads_each_bodiless_envelope_once_and_decides_as_before(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tag, queue_url, dlq_url, sqs = fresh_queues(stack_env)
    too_large = dead_letter_body(None, NOT_KEPT_TOO_LARGE, None)  # the ETL's: counted as without a kept body
    discarded = dead_letter_body(None, NOT_KEPT_NO_KEY, None)  # the same, without a reason attribute
    loose = json.dumps(  # shaped like an envelope, not one the ETL writes: in clear, its text read and matched
        {"format": DEAD_LETTER_FORMAT, "sealed_body": None, "key": None, "note": "x", "user_id": f"erased-{tag}"}
    )
    sqs.send_message_batch(
        QueueUrl=dlq_url,
        Entries=[
            {"Id": "0", "MessageBody": too_large, "MessageAttributes": WRONG_TYPE},
            {"Id": "1", "MessageBody": discarded},
            {"Id": "2", "MessageBody": loose, "MessageAttributes": WRONG_TYPE},
        ],
    )
    parsed = count_envelope_parses(monkeypatch)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"user_id=erased-{tag}\n"))
    dlq = DeadLetterSweep(sqs, queue_url, dlq_url)
    try:
        exit_code = run_erase(argparse.Namespace(stdin=["-"], yes=True, wait=0.0), dlq, DEAD_LETTER_KEY, never_decrypt)
    finally:
        dlq.release()

    out, err = capsys.readouterr()
    assert exit_code == 0, err
    assert "dead letters checked: 3" in out and "holding the person's values, deleted: 1" in out, out
    assert out.split("without a kept body")[1].split("\n")[0].endswith(": 2"), out  # the ETL's two, not the loose one
    assert {body: parsed[body] for body in (too_large, discarded, loose)} == {
        too_large: 1,
        discarded: 1,
        loose: 1,
    }  # each was read twice: by the listing, then by in_clear
