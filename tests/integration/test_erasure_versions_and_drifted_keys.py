"""`dead-letters erase` neither reads versions as ips nor misses a user id under a drifted key (attack 14, #8 and #6).

Finding 8: erase read short `inet_aton` forms in another person's event id (`build-2.5` is
2.0.0.5) as the erased ip although that letter's body was read and holds another ip, and
deleted their never-loaded event. Finding 6: with only a user id given, it matched it only
under a `user_id` key, so the person's letter refused for schema drift (`userId`) was left.
Real SQS (ministack), OpenBao (sealing, the operator's decrypts), Postgres and the vault.

Synthetic values only; no assertion compares a value with output directly.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from devstack.events import OutgoingEvent, send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters, run_dead_letters
from tests.malformed_samples import GOOD


def _event_ids_left(stack_env: dict[str, str], dlq_url: str) -> set[str]:
    """The event ids of the dead letters left in the DLQ."""
    return {
        m["MessageAttributes"]["event_id"]["StringValue"]
        for m in all_dead_letters(stack_env["SQS_ENDPOINT_URL"], dlq_url)
    }


def _erase(stack_env: dict[str, str], env: dict[str, str], criteria: str) -> tuple[int, str, str]:
    """`dead-letters erase - --yes` with `criteria` on stdin, as the DLQ operator: (exit code, stdout, stderr)."""
    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    swept = run_dead_letters(env, "erase", "-", "--yes", "--wait", "5", stdin=criteria, token=operator_token)
    return swept.returncode, swept.stdout, swept.stderr


def test_a_version_in_another_persons_event_id_does_not_delete_their_sealed_letter(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    tag = uuid.uuid4().hex[:8]
    erased_ip = "2.0.0.5"  # what `inet_aton` reads `2.5` as
    theirs = json.dumps({**GOOD, "user_id": f"erased-{tag}", "ip": erased_ip, "device_type": "toaster"})
    other = json.dumps({**GOOD, "user_id": f"other-{tag}", "ip": "198.51.100.20", "device_type": "toaster"})
    versioned = f"evt-{tag}-build-2.5"  # another person's event id: a build number, by coincidence `2.5`
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        send_events(sqs, etl.queue_url, [OutgoingEvent(f"evt-{tag}-own", theirs), OutgoingEvent(versioned, other)])
        assert etl.wired.consumer.drain().quarantined == 2
    assert _event_ids_left(stack_env, etl.dlq_url) == {f"evt-{tag}-own", versioned}

    code, out, err = _erase(stack_env, env, f"ip={erased_ip}\n")
    assert code == 0, err[-2000:]
    assert "deleted: 1" in out and "left untouched: 1" in out, out
    assert _event_ids_left(stack_env, etl.dlq_url) == {versioned}, "the other person's letter was deleted"
    leaked = erased_ip in out + err
    assert not leaked, "the erased ip appears in the command's output"


def test_a_letter_refused_for_a_drifted_user_id_key_is_erased_by_the_user_id_alone(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    tag = uuid.uuid4().hex[:8]
    user = f"erased-{tag}"
    fields = {k: v for k, v in GOOD.items() if k != "user_id"}
    drifted = json.dumps({**fields, "userId": user})  # refused as missing_field, sealed with its body
    other = json.dumps({**fields, "userId": f"other-{tag}"})
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        sent = [OutgoingEvent(f"evt-{tag}-1", drifted), OutgoingEvent(f"evt-{tag}-2", other)]
        send_events(sqs, etl.queue_url, sent)
        assert etl.wired.consumer.drain().quarantined == 2
    assert _event_ids_left(stack_env, etl.dlq_url) == {f"evt-{tag}-1", f"evt-{tag}-2"}

    code, out, err = _erase(stack_env, env, f"user_id={user}\n")
    assert code == 0, err[-2000:]
    assert "deleted: 1" in out and "left untouched: 1" in out, out
    assert _event_ids_left(stack_env, etl.dlq_url) == {f"evt-{tag}-2"}, "the drifted letter was left"
    leaked = user in out + err
    assert not leaked, "the user id appears in the command's output"


def test_letters_holding_the_persons_values_as_json_numbers_or_a_padded_ip_are_erased_and_no_one_elses(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    # Attack 37, K1: a user id and an IMEI sent as JSON numbers (schema drift, refused `wrong_type`) and an ip
    # zero-padded (`%03d`, refused as no ip): "deleted: 1, left untouched: 2", exit 0 - two letters kept the person.
    tag = uuid.uuid4().hex[:8]
    n = 10 + uuid.uuid4().int % 89
    user, imei = 10**9 + uuid.uuid4().int % (9 * 10**9), 10**14 + uuid.uuid4().int % (9 * 10**14)
    ip = f"203.0.113.{n}"
    number = str(int.from_bytes(bytes((203, 0, 113, n)), "big"))  # the ip as a number, in another person's letter
    theirs = {
        f"{tag}-num-user": json.dumps({**GOOD, "user_id": user, "ip": ip, "device_id": f"dev-{tag}"}),
        f"{tag}-num-imei": json.dumps({**GOOD, "user_id": user, "ip": f"198.51.100.{n}", "device_id": imei}),
        f"{tag}-padded-ip": json.dumps({**GOOD, "user_id": user, "ip": f"203.000.113.{n:03d}", "device_id": imei}),
    }
    others = {  # by coincidence: the person's numbers under other keys, a neighbouring padded ip
        f"{tag}-other-1": json.dumps({**GOOD, "user_id": 7, "ip": f"203.000.113.{n + 1:03d}", "order": int(number)}),
        f"{tag}-other-2": json.dumps({**GOOD, "user_id": f"o-{tag}", "device_type": "toaster", "retries": user}),
    }
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        send_events(sqs, etl.queue_url, [OutgoingEvent(i, b) for i, b in {**theirs, **others}.items()])
        assert etl.wired.consumer.drain().quarantined == 5
    assert _event_ids_left(stack_env, etl.dlq_url) == {*theirs, *others}

    code, out, err = _erase(stack_env, env, f"# GDPR-2026-737\nuser_id={user}\ndevice_id={imei}\nip={ip}\n")
    assert code == 0, err[-2000:]
    assert "deleted: 3" in out and "left untouched: 2" in out, out
    assert _event_ids_left(stack_env, etl.dlq_url) == set(others), "the person's letter left, or another's deleted"
    leaked = any(str(v) in out + err for v in (user, imei, ip, number))
    assert not leaked, "a value appears in the command's output"
