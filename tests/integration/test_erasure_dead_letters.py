"""An erasure reaches the DLQ: after `tokenvault erase` and `dead-letters erase`, no dead letter holds the person.

Insider round 6, Break 2: the DLQ keeps refused events sealed for 14 days; after the privacy
officer erased a person's values, the DLQ operator could still `show` them, and a routine
`resend` stored them again under new tokens. Real SQS (ministack), OpenBao (sealing, the
operator's decrypts), Postgres and the vault (the erasure, through the `tokenvault` command).

Synthetic TEST-NET values only. No assertion compares a value with output directly (pytest
would print both on failure): each check is reduced to a boolean first.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg

from devstack.events import OutgoingEvent, send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters, run_dead_letters
from tests.malformed_samples import GOOD

REPO = Path(__file__).resolve().parents[2]
TOKENVAULT = Path(sys.executable).parent / "tokenvault"


def tokenvault_erase(stack_env: dict[str, str], address: str, tokens: list[str]) -> subprocess.CompletedProcess[str]:
    """`tokenvault erase TOKENS` as the privacy officer, against the session's vault."""
    certs = Path(stack_env["STACK_DIR"]) / "certs"
    return subprocess.run(
        [
            str(TOKENVAULT),
            *("--address", address, "--ca", str(certs / "ca.pem"), "--server-name", "localhost"),
            *("--cert", str(certs / "privacy-officer.pem"), "--key", str(certs / "privacy-officer-key.pem")),
            *("--login-row-keys", stack_env["LOGIN_ROW_KEYS_FILE"]),  # the ETL's public keys, to verify the rows
            *("erase", *tokens, "--purpose", "GDPR-2026-602", "--yes"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={**os.environ, "TOKENVAULT_ANALYST_DSN": stack_env["PG_ANALYST_DSN"]},  # it counts others' rows first
    )


def event(**fields: Any) -> str:
    return json.dumps({**GOOD, **fields})


def test_after_an_erasure_the_dlq_operator_deletes_the_persons_dead_letters_and_only_those(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    tag = uuid.uuid4().hex[:8]
    n = random.randrange(150, 160)
    ip, device, user = f"203.0.113.{n}", f"erasure-dev-{tag}", f"erased-{tag}"  # the person (synthetic)
    person = {"user_id": user, "ip": ip, "device_id": device}
    theirs = {  # event id -> body: one loads, the others are refused and dead-lettered
        f"{tag}-p-good": event(**person),
        f"{tag}-p-toaster": event(**person, device_type="toaster"),
        f"{tag}-p-mapped": event(user_id=f"someone-{tag}", ip=f"::ffff:{ip}", device_id=f"d-{tag}", app_version="x"),
        f"{tag}-p-not-json": "{oops " + json.dumps({"device_id": device}),
    }
    others = {  # near the person's values, but not theirs: left untouched
        f"{tag}-o-prefix-ip": event(user_id=f"other-{tag}", ip=f"203.0.113.{n // 10}", device_type="toaster"),
        f"{tag}-o-longer-ids": event(user_id=f"{user}x", device_id=f"{device}0", app_version="bad"),
        f"{tag}-o-not-json": "not json at all",
    }
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        send_events(sqs, etl.queue_url, [OutgoingEvent(i, b) for i, b in {**theirs, **others}.items()])
        summary = etl.wired.consumer.drain()
    assert (summary.loaded, summary.quarantined) == (1, 6)
    sqs.send_message(  # moved by SQS's redrive as it was (a crash loop): in clear, no reason
        QueueUrl=etl.dlq_url,
        MessageBody=event(**person, device_type="toaster"),
        MessageAttributes={"event_id": {"DataType": "String", "StringValue": f"{tag}-p-redriven"}},
    )
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT masked_ip, masked_device_id FROM user_logins WHERE event_id = %s", (f"{tag}-p-good",)
        ).fetchone()
    assert row is not None

    # The privacy officer erases the person's tokens; the command names the DLQ step and who runs it.
    erased = tokenvault_erase(stack_env, vault.address, list(row))
    assert erased.returncode == 0, erased.stderr
    assert erased.stdout.count("erased") == 2
    assert "DLQ operator" in erased.stderr and "dead-letters erase - --yes" in erased.stderr

    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    criteria = f"# GDPR-2026-602\nuser_id={user}\nip={ip}\ndevice_id={device}\n"
    outputs: list[str] = [erased.stdout + erased.stderr]

    # Without --yes: counts only, nothing deleted.
    dry = run_dead_letters(env, "erase", "-", stdin=criteria, token=operator_token)
    outputs.append(dry.stdout + dry.stderr)
    assert dry.returncode == 0, dry.stderr
    assert "would be deleted (dry run: add --yes to delete): 4" in dry.stdout
    assert "would be left untouched: 3" in dry.stdout  # it said "left untouched: 7": 4 + 7 of 7 checked
    assert len(all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)) == 7

    # Another reader holds one of the person's dead letters: it is counted as not checked (exit 3).
    held = hold_dead_letter(stack_env, etl.dlq_url, f"{tag}-p-not-json")
    first = run_dead_letters(env, "erase", "-", "--yes", "--wait", "0", stdin=criteria, token=operator_token)
    outputs.append(first.stdout + first.stderr)
    assert first.returncode == 3, first.stderr
    assert "deleted: 3" in first.stdout and "held by another reader: 1" in first.stderr
    sqs.change_message_visibility(QueueUrl=etl.dlq_url, ReceiptHandle=held, VisibilityTimeout=0)
    second = run_dead_letters(env, "erase", "-", "--yes", stdin=criteria, token=operator_token)
    outputs.append(second.stdout + second.stderr)
    assert second.returncode == 0, second.stderr
    assert "deleted: 1" in second.stdout and "left untouched: 3" in second.stdout

    # The person's dead letters are gone; the others are there, intact.
    listing = run_dead_letters(env, "list")
    outputs.append(listing.stdout + listing.stderr)
    assert listing.returncode == 0 and "3 dead letter(s)" in listing.stdout, listing.stderr
    left = {
        m["MessageAttributes"]["event_id"]["StringValue"]: m["MessageId"]
        for m in all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    }
    assert sorted(left) == sorted(others)
    for event_id, message_id in left.items():
        shown = run_dead_letters(env, "show", message_id, token=operator_token)
        intact = shown.returncode == 0 and shown.stdout.rstrip("\n") == others[event_id]
        assert intact, f"dead letter {event_id} was changed"

    texts = "\n".join(outputs)
    leaked = [name for name, value in person.items() if value in texts]
    assert leaked == [], "the person's values appear in the commands' output"


def hold_dead_letter(stack_env: dict[str, str], dlq_url: str, event_id: str) -> str:
    """Receive the dead letter of `event_id` for 120 s, as another operator's listing would; its receipt handle."""
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    held = ""
    for message in all_dead_letters(stack_env["SQS_ENDPOINT_URL"], dlq_url):
        if message["MessageAttributes"]["event_id"]["StringValue"] != event_id:
            continue
        for _ in range(20):
            if held:
                break
            for got in sqs.receive_message(
                QueueUrl=dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=120
            ).get("Messages", []):
                if got["MessageId"] == message["MessageId"]:
                    held = got["ReceiptHandle"]
                else:
                    sqs.change_message_visibility(
                        QueueUrl=dlq_url, ReceiptHandle=got["ReceiptHandle"], VisibilityTimeout=0
                    )
    assert held
    return held


def test_a_planted_envelope_does_not_stop_the_erasure_of_the_persons_malformed_dead_letters(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """Insider round 7: Break 1 (other spellings in malformed bodies) and Break 3 (a plant aborted the run)."""
    tag = uuid.uuid4().hex[:8]
    n = random.randrange(150, 160)
    ip, device, user = f"203.0.113.{n}", f"erasure-dev-{tag}", f"erased-{tag}"  # the person (synthetic)
    mapped_hex = f"::ffff:cb00:71{n:02x}"  # the same address, IPv4-mapped in hex
    theirs = {  # each refused with its own reason; each holds the person in a spelling the vault would accept
        f"{tag}-p-lists": json.dumps({**GOOD, "user_id": [user], "ip": [f"::ffff:{ip}"], "device_id": [f"{device} "]}),
        f"{tag}-p-array": json.dumps([{**GOOD, "ip": mapped_hex, "device_id": f" {device}"}]),
        f"{tag}-p-nested": json.dumps({"event": {"ip": f"0:0:0:0:0:ffff:{ip}"}}),
        f"{tag}-p-not-json": '{"user_id": "' + user.replace("e", "\\u0065") + '", "x": 1,}',
    }
    others = {f"{tag}-o-lists": json.dumps({**GOOD, "ip": [f"::ffff:{ip}0"], "device_id": [f"{device}-b"]})}
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        send_events(sqs, etl.queue_url, [OutgoingEvent(i, b) for i, b in {**theirs, **others}.items()])
        summary = etl.wired.consumer.drain()
        # Planted after the drain, whose take-back would seal it as a refused event (attack 12, finding 2)
        planted = sqs.send_message(  # anyone who may send to the DLQ: garbage under the dead-letter key
            QueueUrl=etl.dlq_url,
            MessageBody=json.dumps(
                {
                    "format": "tokenvault-dead-letter/1",
                    "sealed_body": "vault:v1:" + "A" * 32,
                    "key": "tokenvault-dead-letters",
                    "note": None,
                }
            ),
            MessageAttributes={
                "reason": {"DataType": "String", "StringValue": "not_json"},
                "event_id": {"DataType": "String", "StringValue": f"{tag}-plant"},
            },
        )["MessageId"]
    assert (summary.loaded, summary.quarantined) == (0, 5)

    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    criteria = f"user_id={user}\nip={ip}\ndevice_id={device}\n"
    swept = run_dead_letters(env, "erase", "-", "--yes", "--wait", "5", stdin=criteria, token=operator_token)
    outputs = [swept.stdout + swept.stderr]
    assert swept.returncode == 3, swept.stderr
    assert "deleted: 4" in swept.stdout and "left untouched: 2" in swept.stdout
    assert "could not be opened: 1" in swept.stderr and planted in swept.stderr
    left = {
        m["MessageAttributes"]["event_id"]["StringValue"]
        for m in all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    }
    assert left == {f"{tag}-plant", *others}

    # The operator removes the plant: refused without --yes, deleted with it; the next run is complete.
    refused = run_dead_letters(env, "delete", planted)
    assert refused.returncode == 2 and "--yes" in refused.stderr, refused.stderr
    deleted = run_dead_letters(env, "delete", planted, "--yes")
    assert deleted.returncode == 0 and planted in deleted.stdout, deleted.stderr
    again = run_dead_letters(env, "erase", "-", "--yes", "--wait", "5", stdin=criteria, token=operator_token)
    outputs += [refused.stdout + refused.stderr, deleted.stdout + deleted.stderr, again.stdout + again.stderr]
    assert again.returncode == 0, again.stderr
    assert "deleted: 0" in again.stdout and "left untouched: 1" in again.stdout
    left = {
        m["MessageAttributes"]["event_id"]["StringValue"]
        for m in all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    }
    assert left == set(others)

    texts = "\n".join(outputs)
    leaked = [kind for kind, value in (("user_id", user), ("ip", ip), ("device_id", device)) if value in texts]
    assert leaked == [], "the person's values appear in the commands' output"


def test_a_tampered_envelope_makes_the_erasure_incomplete_until_the_operator_removes_it(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """An envelope naming another Transit key cannot be opened with the dead-letter key, so it is
    not checked: the run says so with its message id and exits 3 (it exited 0: an erasure looked
    complete while a letter nobody checked stayed, and with a key setting naming another key
    OpenBao has, every genuine letter passed as tampered)."""
    tag = uuid.uuid4().hex[:8]
    ip, device, user = f"203.0.113.{random.randrange(160, 170)}", f"erasure-dev-{tag}", f"erased-{tag}"
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        send_events(sqs, etl.queue_url, [OutgoingEvent(f"{tag}-p", event(ip=ip, device_id=device, locale=7))])
        summary = etl.wired.consumer.drain()
        # Planted after the drain, whose take-back would seal it as a refused event (attack 12, finding 2)
        tampered = sqs.send_message(  # sealed under a key the ETL never uses: what it holds is unknown
            QueueUrl=etl.dlq_url,
            MessageBody=json.dumps(
                {"format": "tokenvault-dead-letter/1", "sealed_body": "vault:v1:" + "B" * 32, "key": f"other-{tag}"}
            ),
            MessageAttributes={
                "reason": {"DataType": "String", "StringValue": "not_json"},
                "event_id": {"DataType": "String", "StringValue": f"{tag}-tampered"},
            },
        )["MessageId"]
    assert (summary.loaded, summary.quarantined) == (0, 1)

    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    criteria = f"user_id={user}\nip={ip}\ndevice_id={device}\n"
    swept = run_dead_letters(env, "erase", "-", "--yes", "--wait", "5", stdin=criteria, token=operator_token)
    assert swept.returncode == 3, swept.stderr
    assert "deleted: 1" in swept.stdout, swept.stdout
    assert "tampered: 1" in swept.stderr and tampered in swept.stderr, swept.stderr

    deleted = run_dead_letters(env, "delete", tampered, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    again = run_dead_letters(env, "erase", "-", "--yes", "--wait", "5", stdin=criteria, token=operator_token)
    assert again.returncode == 0 and "deleted: 0" in again.stdout, again.stderr
    texts = swept.stdout + swept.stderr + again.stdout + again.stderr
    leaked = [kind for kind, value in (("user_id", user), ("ip", ip), ("device_id", device)) if value in texts]
    assert leaked == [], "the person's values appear in the commands' output"
