"""Attack 38, M5b (after 78acfbb): many planted letters of 2 tokens each no longer spend the officer's erase budget.

The ETL's identity encrypts anything with the dead-letter key and sends anything to the DLQ: 50 letters whose
sealed body names the requester's user id, each with a well-formed record of one `ip_` and one `dev_`
token-shaped string. 78acfbb reads each record as one event's, so `dead-letters erase` printed all 100 in the
officer's line; tokens naming no value are NOT_FOUND yet charged to the officer's erase budget (burst 100), and
the next person's erasure was refused RESOURCE_EXHAUSTED. Now records count once per event id and a run naming
more than --max-minted-tokens (20) prints no officer's line: the letters are named by message id, left in the
DLQ, exit 3; the officer's budget is untouched and the next person's erasure goes through.
O2: `tokenvault erase --from-dead-letters` reports a token erased before as already erased, exit 0 (one the vault never
issued fails: attack 39, P2).

Session stack: real SQS, the ETL's own sealer (its Transit token), the vault, OpenBao and PostgreSQL.
Synthetic values only.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from devstack.events import OutgoingEvent, send_events
from devstack.sqs import sqs_client
from etl_service.service.sealing import dead_letter_body, minted_plaintext
from tests.conftest import RunningVault, etl_consumer, etl_harness_env, vault_clients
from tests.integration.dead_letters import run_dead_letters_here
from tests.integration.test_erasure_reaches_tokens_of_a_dead_lettered_load import officer_runs
from tests.malformed_samples import body
from tokenvault_client import Revealed

ALPHABET = string.ascii_letters + string.digits
PLANTED = 50


def _token_shaped(prefix: str) -> str:
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(22))


@pytest.mark.timeout(180)
def test_m5b_many_planted_letters_of_two_tokens_each_print_no_officers_line_and_the_next_erasure_goes_through(
    stack_env: dict[str, str],
    vault: RunningVault,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address)
    requester, next_person = f"m5b-requester-{tag}", f"m5b-next-{tag}"
    with (
        etl_consumer(env) as etl,
        vault_clients(stack_env, vault.address) as make,
        psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin,
    ):
        send_events(
            sqs,
            etl.queue_url,
            [
                OutgoingEvent(
                    f"m5b-{tag}-{n}",
                    body(user_id=u, ip=f"198.18.{int(tag[:2], 16)}.{60 + n}", device_id=f"m5b-dev-{tag}-{n}"),
                )
                for n, u in enumerate((requester, next_person))
            ],
        )
        assert etl.wired.consumer.drain().loaded == 2

        # The ETL's identity plants 50 letters naming the requester, each with a record of 2 token-shaped strings.
        sealer = etl.wired.sealer
        assert sealer is not None and hasattr(sealer, "_encrypt")
        user_ids = [requester, next_person, *(f"m5b-someone-{tag}-{n:04d}" for n in range(200))]
        forged = [t for _ in range(PLANTED) for t in (_token_shaped("ip_"), _token_shaped("dev_"))]
        items = [{"plaintext": base64.b64encode(json.dumps({"user_id": user_ids}).encode()).decode()}]
        items += [
            {"plaintext": base64.b64encode(minted_plaintext(forged[2 * n : 2 * n + 2]).encode()).decode()}
            for n in range(PLANTED)
        ]
        sealed_body, *records = sealer._encrypt(items)
        planted = [
            sqs.send_message(QueueUrl=etl.dlq_url, MessageBody=dead_letter_body(sealed_body, None, sealer.key_name, r))[
                "MessageId"
            ]
            for r in records
        ]

        # The requester's erasure, step 2: no officer's line; the 50 letters named, left in the DLQ; exit 3.
        token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
        swept = run_dead_letters_here(
            monkeypatch, capsys, env, "erase", "-", "--yes", "--wait", "0",
            stdin=f"# GDPR-A38-M5B\nuser_id={requester}\n", token=token,
        )  # fmt: skip
        assert swept.returncode == 3, swept.stdout + swept.stderr
        assert "tokenvault erase" not in swept.stdout
        assert not any(t in swept.stdout + swept.stderr for t in forged)
        assert f"name {2 * PLANTED} tokens, more than 20" in swept.stderr
        assert all(m in swept.stderr for m in planted)
        assert f"left in the DLQ: {PLANTED}" in swept.stdout

        # The next person's genuine erasure goes through: the officer's budget was not spent on the plant.
        (ip_token, device_token) = admin.execute(
            "SELECT masked_ip, masked_device_id FROM user_logins WHERE user_id = %s", (next_person,)
        ).fetchone() or ("", "")
        nxt = officer_runs(
            stack_env, vault.address,
            f"tokenvault erase {ip_token} {device_token} --user-id {next_person} --purpose REFERENCE --yes",
        )  # fmt: skip
        assert nxt.returncode == 0, nxt.stderr
        still = make("fraud-investigator").detokenize([str(ip_token), str(device_token)], "INC-A38-M5B")
        assert not any(isinstance(r, Revealed) for r in still)
        # O2: the third step usually names tokens the first step erased. With --from-dead-letters that is done,
        # not a failure; without it, NOT_FOUND is still an error (exit 1).
        line = f"tokenvault erase {ip_token} {device_token} --user-id {next_person} --purpose REFERENCE"
        again = officer_runs(stack_env, vault.address, f"{line} --from-dead-letters --yes")
        assert again.returncode == 0 and again.stdout.count("already erased (by an earlier erasure)") == 2, again.stderr
        plain = officer_runs(stack_env, vault.address, f"{line} --yes")
        assert plain.returncode == 1 and "2 of 2 tokens were not erased: 2 NOT_FOUND" in plain.stderr, plain.stderr
        took = time.monotonic() - started
        print(f"\nM5b: {PLANTED} planted letters named, none printed; next erasure exit 0; {took:.1f} s")
