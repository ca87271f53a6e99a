"""Attack 39, P1: a letter planted under the genuine letter's event id, with another record, hid the genuine minted
tokens (cda9ec6 refused both records, no officer's line, exit 3, --max-minted-tokens did not lift it), and the
advised `dead-letters delete` took the genuine letter with its record unread.

Now `dead-letters erase` prints every record's tokens (the genuine ones erased whichever letter is the plant),
naming the letters that share the event id; `dead-letters delete` refuses a letter carrying a record unless
`--drop-minted-record`, which prints its tokens first. Real SQS, the ETL's own Transit sealer, the vault, OpenBao,
PostgreSQL (the tester's setup, h-attack39). Synthetic values only.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from devstack.sqs import sqs_client
from etl_service.adapters.sqs_common import EVENT_ID_ATTRIBUTE
from etl_service.service.sealing import dead_letter_body, minted_plaintext
from tests.conftest import RunningVault, etl_consumer, etl_harness_env, vault_clients
from tests.integration.dead_letters import run_dead_letters_here
from tests.malformed_samples import body
from tokenvault_client import TokenType

ALPHABET = string.ascii_letters + string.digits


def _token_shaped(prefix: str) -> str:
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(22))


@pytest.mark.timeout(180)
def test_every_record_under_a_shared_event_id_is_printed_and_delete_keeps_a_letter_with_a_record(
    stack_env: dict[str, str],
    vault: RunningVault,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address)
    requester = f"p1-requester-{tag}"
    ip, device = f"198.18.{int(tag[:2], 16)}.77", f"p1-dev-{tag}"
    event_id = f"p1-event-{tag}"
    with etl_consumer(env) as etl, vault_clients(stack_env, vault.address) as make:
        # The genuine state after a load lost on its last receive: the vault minted the person's values, no row holds
        # them, the ETL's letter (reason dependency_unavailable) records the two tokens under the event's id.
        minted = make("etl-service").tokenize([(TokenType.IP, ip), (TokenType.DEVICE_ID, device)])
        assert all(isinstance(t, str) for t in minted), minted
        genuine_tokens = [str(t) for t in minted]
        sealer = etl.wired.sealer
        assert sealer is not None and hasattr(sealer, "_encrypt")
        plain = body(user_id=requester, ip=ip, device_id=device)
        forged = [_token_shaped("ip_"), _token_shaped("dev_")]
        items = [
            {"plaintext": base64.b64encode(plain.encode()).decode()},
            {"plaintext": base64.b64encode(minted_plaintext(genuine_tokens).encode()).decode()},
            {"plaintext": base64.b64encode(json.dumps({"user_id": requester}).encode()).decode()},
            {"plaintext": base64.b64encode(minted_plaintext(forged).encode()).decode()},
        ]
        genuine_body, genuine_record, plant_body, plant_record = sealer._encrypt(items)
        attributes: dict[str, Any] = {
            EVENT_ID_ATTRIBUTE: {"DataType": "String", "StringValue": event_id},
            "reason": {"DataType": "String", "StringValue": "dependency_unavailable"},
        }
        genuine = sqs.send_message(
            QueueUrl=etl.dlq_url,
            MessageBody=dead_letter_body(genuine_body, None, sealer.key_name, genuine_record),
            MessageAttributes=attributes,
        )["MessageId"]
        # The ETL's identity: one letter naming the requester, under the same event id, another record.
        planted = sqs.send_message(
            QueueUrl=etl.dlq_url,
            MessageBody=dead_letter_body(plant_body, None, sealer.key_name, plant_record),
            MessageAttributes=attributes,
        )["MessageId"]

        token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
        # `delete` of a letter carrying a record: refused without --drop-minted-record, nothing printed, kept.
        for letter in (planted, genuine):
            kept = run_dead_letters_here(monkeypatch, capsys, env, "delete", letter, "--yes", token=token)
            assert kept.returncode == 1 and "Not deleted" in kept.stderr, kept.stdout + kept.stderr
            assert not any(t in kept.stdout + kept.stderr for t in genuine_tokens + forged)
        person = f"# GDPR-A39-P1\nuser_id={requester}\nip={ip}\ndevice_id={device}\n"
        swept = run_dead_letters_here(
            monkeypatch, capsys, env, "erase", "-", "--yes", "--wait", "0", stdin=person, token=token
        )
        out = swept.stdout + swept.stderr
        assert swept.returncode == 0, out
        line = next(w for w in swept.stdout.splitlines() if w.lstrip().startswith("tokenvault "))
        assert all(t in line for t in genuine_tokens + forged), line  # both records: the genuine one erased either way
        [shared] = [w for w in swept.stdout.splitlines() if "share an event id" in w]
        assert genuine in shared and planted in shared, out
        # --drop-minted-record: the record's tokens printed, then the letter deleted.
        other_record = [_token_shaped("ip_"), _token_shaped("dev_")]
        [other_body, other_sealed] = sealer._encrypt(
            [{"plaintext": base64.b64encode(m.encode()).decode()} for m in (plain, minted_plaintext(other_record))]
        )
        other = sqs.send_message(
            QueueUrl=etl.dlq_url,
            MessageBody=dead_letter_body(other_body, None, sealer.key_name, other_sealed),
            MessageAttributes={EVENT_ID_ATTRIBUTE: {"DataType": "String", "StringValue": f"{event_id}-2"}},
        )["MessageId"]
        dropped = run_dead_letters_here(
            monkeypatch, capsys, env, "delete", other, "--yes", "--drop-minted-record", token=token
        )
        assert dropped.returncode == 0, dropped.stdout + dropped.stderr
        assert all(t in dropped.stdout for t in other_record) and "deleted dead letter" in dropped.stdout
        assert dropped.stdout.index(other_record[0]) < dropped.stdout.index("deleted dead letter")
    took = time.monotonic() - started
    print(f"\nA39-P1 fix: both records printed, delete refused then dropped with tokens; {took:.1f} s")
