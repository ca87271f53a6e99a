"""`dead-letters erase` reads each letter's body once (review 12, finding 9).

`_check` read the last text it reached (up to 256 kB: a sealed letter's opened original, an
original in clear) as an envelope a second time to tell whether it was an original, when opening
it (dead_letter_layers) or listing it had already read it. Real SQS (ministack) and OpenBao (the
ETL's sealer, the DLQ operator's decrypts); the sweep runs in-process so the envelope reader
(sealing.read_dead_letter_body's JSON parse) can be counted. Synthetic values only.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.adapters.transit_sealer import DEAD_LETTER_KEY, open_sealed
from etl_service.entrypoints.dead_letter_erasure import run_erase
from etl_service.service.sealing import NOT_KEPT_TOO_LARGE, dead_letter_body
from tests.integration.counted_parses import WRONG_TYPE, count_envelope_parses, dlq_sealer, fresh_queues


def test_erase_reads_each_original_body_once(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tag, queue_url, dlq_url, sqs = fresh_queues(stack_env)
    originals = [json.dumps({"user_id": f"{who}-{tag}", "padding": "x" * 2000}) for who in ("erased", "other")]
    sealer = dlq_sealer(stack_env)
    in_clear = json.dumps({"user_id": f"redriven-{tag}"})  # an original SQS's redrive moved as it was
    bodies = [*sealer.seal(originals), in_clear, dead_letter_body(None, NOT_KEPT_TOO_LARGE, None)]
    sqs.send_message_batch(
        QueueUrl=dlq_url,
        Entries=[
            {"Id": str(i), "MessageBody": b, "MessageAttributes": WRONG_TYPE if b != in_clear else {}}
            for i, b in enumerate(bodies)
        ],
    )
    parsed = count_envelope_parses(monkeypatch)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"user_id=erased-{tag}\n"))
    token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    dlq = DeadLetterSweep(sqs, queue_url, dlq_url)
    try:
        exit_code = run_erase(
            argparse.Namespace(stdin=["-"], yes=True, wait=0.0),
            dlq,
            DEAD_LETTER_KEY,
            lambda ciphertext: open_sealed(stack_env["VAULT_ADDR"], token, DEAD_LETTER_KEY, ciphertext),
        )
    finally:
        dlq.release()

    out, err = capsys.readouterr()
    assert exit_code == 0, err
    assert "dead letters checked: 4" in out and "holding the person's values, deleted: 1" in out
    read_twice = [i for i, text in enumerate([*originals, in_clear]) if parsed[text] != 1]
    assert read_twice == []  # each was read twice: [0, 1, 2]
