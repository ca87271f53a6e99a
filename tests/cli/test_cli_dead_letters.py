"""`dead-letters show/resend` open bodies only with the dead-letter key, whatever a message names.

Anyone who may send to the DLQ writes the envelope, key name included. A planted envelope naming
the vault's KEK, opened with an operator's broad token (the compose instructions export the root
token), would print what the KEK decrypts: the wrapped data keys. Real SQS (ministack) and OpenBao
with its file audit device, on the embedded stack.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import hvac

from devstack.envfile import read_env_file
from devstack.sqs import identity_key, sqs_client
from etl_service.adapters.transit_sealer import DEAD_LETTER_KEY
from etl_service.service.sealing import dead_letter_body
from tests.cli.conftest import CliStack
from tests.etl_log import started_line
from tests.integration.dead_letters import run_dead_letters


def dead_letters(stack: CliStack, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    """`python -m etl_service dead-letters ARGS` with the stack's settings, as the README has it.

    ETL_QUEUE_URL only: the DLQ's URL and the dead-letter key are left to their defaults.
    """
    env = {**stack.env, "ETL_QUEUE_URL": stack.env["SQS_QUEUE_URL"]}
    return run_dead_letters(env, *args, token=token, unset=("ETL_DLQ_URL", "ETL_DLQ_SEAL_KEY"))


def decrypts_of(audit_log: Path, key: str, ciphertext: str, root: hvac.Client) -> int:
    """Requests to transit/decrypt/KEY in OpenBao's audit log so far that carry `ciphertext`.

    The log holds values HMAC-ed: OpenBao's sys/audit-hash gives the ciphertext's HMAC under the device's salt.
    Only this ciphertext counts: the stack's vault service decrypts its data keys with the KEK at its own times.
    Only whole lines count: OpenBao may be writing the last one while it is read.
    """
    hashed = root.adapter.post("/v1/sys/audit-hash/file", json={"input": ciphertext})["data"]["hash"]
    whole_lines = audit_log.read_text().rpartition("\n")[0].splitlines()
    count = 0
    for line in whole_lines:
        entry: dict[str, Any] = json.loads(line)
        request = entry.get("request", {})
        if entry.get("type") == "request" and request.get("path") == f"transit/decrypt/{key}":
            count += hashed in json.dumps(request.get("data"))
    return count


def plant_envelope(stack: CliStack, key: str, ciphertext: str) -> str:
    """Send a dead letter naming `key` with a reason, as the ETL writes them (with its SQS key); its message id."""
    sent = sqs_client(stack.env["SQS_ENDPOINT_URL"], identity_key(stack.env, "etl")).send_message(
        QueueUrl=stack.env["SQS_DLQ_URL"],
        MessageBody=dead_letter_body(ciphertext, None, key),
        MessageAttributes={
            "reason": {"DataType": "String", "StringValue": "missing_field"},
            "reason_detail": {"DataType": "String", "StringValue": "app_version"},
            "event_id": {"DataType": "String", "StringValue": f"planted-{uuid.uuid4().hex[:8]}"},
        },
    )
    return str(sent["MessageId"])


def test_the_stacks_etl_takes_nothing_back_from_the_dlq_the_tests_plant_in(cli_stack: CliStack) -> None:
    # With the default take-back (every 300 s) the stack's ETL moved a plant that was not its own while
    # its test read it (the run of 2323ce7): the shared stack's ETL is started never to take back.
    assert read_env_file(cli_stack.state_dir / "stack.env")["STACK_ETL_TAKE_BACK_SECONDS"] == "0"
    started = started_line(Path(cli_stack.env["ETL_SERVICE_LOG"]))
    assert started["mode"] == "run" and started["take_back_seconds"] == 0, started


def test_an_envelope_naming_another_key_is_refused_unopened_and_reported(cli_stack: CliStack) -> None:
    env = cli_stack.env
    root = Path(env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip()
    secret = f"wrapped-data-key-{uuid.uuid4().hex}"
    kek = env["VAULT_KEK_NAME"]
    root_client = hvac.Client(url=env["VAULT_ADDR"], token=root)
    ciphertext = root_client.secrets.transit.encrypt_data(
        name=kek, plaintext=base64.b64encode(secret.encode()).decode()
    )["data"]["ciphertext"]
    message_id = plant_envelope(cli_stack, kek, ciphertext)
    audit_log = Path(env["VAULT_AUDIT_LOG"])
    try:
        before = decrypts_of(audit_log, kek, ciphertext, root_client)
        operator = Path(env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
        for token in (root, operator):  # a token that could decrypt with the KEK, and the operator's own
            for args in (["show", message_id], ["resend", message_id]):
                done = dead_letters(cli_stack, *args, token=token)
                assert done.returncode == 1, (args, done.stdout)
                assert secret not in done.stdout + done.stderr
                assert f"names Transit key {kek!r}" in done.stderr and "tokenvault-dead-letters" in done.stderr
                assert "tamper" in done.stderr and "refused to decrypt" not in done.stderr  # ours, not OpenBao's 403
        assert decrypts_of(audit_log, kek, ciphertext, root_client) == before  # no decrypt was attempted with the KEK
        root_client.secrets.transit.decrypt_data(name=kek, ciphertext=ciphertext)  # the count sees one when made
        assert decrypts_of(audit_log, kek, ciphertext, root_client) == before + 1

        listing = dead_letters(cli_stack, "list", token="")
        assert listing.returncode == 0, listing.stderr
        line = next(x for x in listing.stdout.splitlines() if x.startswith(message_id))
        assert "TAMPERED" in line
        assert "tampered" in listing.stderr and message_id in listing.stderr
    finally:
        # The operator removes the plant unopened, as the tampering review ends (and as `dead-letters
        # erase` asks: a tampered envelope makes every erase run incomplete until it is gone) - also
        # when an assertion above failed: on the shared stack, the README block's erase (test_docs_run)
        # would exit 3 on it.
        removed = dead_letters(cli_stack, "delete", message_id, "--yes", token="")
    assert removed.returncode == 0, removed.stderr
    listing = dead_letters(cli_stack, "list", token="")
    assert message_id not in listing.stdout


def test_erase_and_show_without_the_operators_token_stop_as_a_missing_setting(cli_stack: CliStack) -> None:
    # The exit status reads "2 usage or settings (a missing setting, ...)"; a missing VAULT_TOKEN
    # exited 1, the code for SQS or OpenBao failing or refusing (documentation walk, 4 December).
    env = {**cli_stack.env, "ETL_QUEUE_URL": cli_stack.env["SQS_QUEUE_URL"]}
    erase = run_dead_letters(env, "erase", "-", stdin="ip=203.0.113.9\n", token="")
    assert erase.returncode == 2 and "VAULT_TOKEN" in erase.stderr, erase.stderr
    assert "dead letters checked" not in erase.stdout
    # Sealed for real under the dead-letter key, as the ETL seals: an ETL taking back (every 300 s by default) what
    # is not its own moved a plant Transit does not authenticate ("vault:v1:AAA...") while this test ran, and
    # re-dead-lettered it inside another envelope that no one could open (the README block's erase then exited 3).
    # The shared stack's ETL now never takes back (conftest); a genuine envelope stays right under either.
    root = Path(cli_stack.env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip()
    ciphertext = hvac.Client(url=cli_stack.env["VAULT_ADDR"], token=root).secrets.transit.encrypt_data(
        name=DEAD_LETTER_KEY, plaintext=base64.b64encode(b'{"note": "planted by a test"}').decode()
    )["data"]["ciphertext"]
    sealed = plant_envelope(cli_stack, DEAD_LETTER_KEY, ciphertext)
    try:
        show = dead_letters(cli_stack, "show", sealed, token="")
    finally:
        dead_letters(cli_stack, "delete", sealed, "--yes", token="")  # the plant leaves the stack's DLQ
    assert show.returncode == 2 and "VAULT_TOKEN" in show.stderr, show.stderr
