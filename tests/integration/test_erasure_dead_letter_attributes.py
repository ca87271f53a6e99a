"""`dead-letters erase` matches a dead letter's attributes, not only its body (attack 10, finding 4).

With ETL_DLQ_BODIES=discard (or a body over the size limit) a dead letter keeps no body: its
event id is all that is left of it. A producer that builds event ids from a device id (an IDFV)
or a user id leaves the person named there; the erasure ignored attributes, reported
`deleted: 0` and exited 0 while the DLQ still named the person. Then it matched every attribute
and deleted other people's letters: the ETL's own reason_detail "... at position 0" held user id
`0` (attack 11, finding 1); only the event id is matched now. Real SQS (ministack), OpenBao
(the operator's token and the dead-letter key are checked first), Postgres and the vault.

Synthetic values only; no assertion compares a value with output directly.
"""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from pathlib import Path
from typing import Any

from devstack.events import OutgoingEvent, send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters, run_dead_letters
from tests.malformed_samples import GOOD


def test_a_bodiless_dead_letter_whose_event_id_names_the_person_is_erased_and_only_it(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    tag = uuid.uuid4().hex[:8]
    device, user = str(uuid.uuid4()), f"erased-{tag}"  # the person: an IDFV, a user id
    refused = json.dumps({**GOOD, "device_type": "toaster"})  # refused; in discard mode its body is not kept
    theirs = [device, f"login-{user}-17"]  # the IDFV as the event id; the user id as a group of it
    others = [str(uuid.uuid4()), f"login-{user}x-17"]  # another IDFV; a longer user id
    unparsable = f"evt-{tag}-0"  # another person's letter: reason_detail "... at position 0" (attack 11, finding 1)
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address)
    discarding = {k: v for k, v in env.items() if not k.startswith("ETL_DLQ_SEAL_")} | {"ETL_DLQ_BODIES": "discard"}
    with etl_consumer(discarding) as etl:
        outgoing = [OutgoingEvent(event_id, refused) for event_id in theirs + others]
        send_events(sqs, etl.queue_url, [*outgoing, OutgoingEvent(unparsable, "not json")])
        summary = etl.wired.consumer.drain()
    assert (summary.loaded, summary.quarantined) == (0, 5)
    letters = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    assert {m["MessageAttributes"]["event_id"]["StringValue"] for m in letters} == {*theirs, *others, unparsable}
    details = [m["MessageAttributes"]["reason_detail"]["StringValue"] for m in letters]
    assert any(detail.endswith("at position 0)") for detail in details), details

    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    # User id `0` is in that letter's reason_detail, written by the ETL: it names nobody, nothing is deleted.
    zero = run_dead_letters(env, "erase", "-", "--yes", "--wait", "5", stdin="user_id=0\n", token=operator_token)
    assert zero.returncode == 0, zero.stderr
    assert "deleted: 0" in zero.stdout and "left untouched: 5" in zero.stdout, zero.stdout
    criteria = f"user_id={user}\ndevice_id={device.upper()}\n"  # an IDFV is written in either case
    swept = run_dead_letters(env, "erase", "-", "--yes", "--wait", "5", stdin=criteria, token=operator_token)
    assert swept.returncode == 0, swept.stderr
    assert "deleted: 2" in swept.stdout and "left untouched: 3" in swept.stdout, swept.stdout
    left = {
        m["MessageAttributes"]["event_id"]["StringValue"]
        for m in all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    }
    assert left == {*others, unparsable}
    texts = swept.stdout + swept.stderr
    leaked = [
        kind for kind, value in (("user_id", user), ("device_id", device)) if value.casefold() in texts.casefold()
    ]
    assert leaked == [], "the person's values appear in the command's output"


def _redriven(sqs: Any, env: dict[str, str], originals: list[tuple[str, str]]) -> None:
    """Send (event id, body) pairs to the source queue and let SQS's redrive move them to the DLQ as they are.

    `env`'s queues redrive after 2 receives (etl_harness_env(max_receive_count=2)); no ETL reads them meanwhile.
    """
    expected = len(all_dead_letters(env["ETL_SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"])) + len(originals)
    for event_id, text in originals:
        attributes = {"event_id": {"DataType": "String", "StringValue": event_id}}
        sqs.send_message(QueueUrl=env["ETL_QUEUE_URL"], MessageBody=text, MessageAttributes=attributes)
    deadline = time.monotonic() + 30
    while len(all_dead_letters(env["ETL_SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"])) < expected:
        assert time.monotonic() < deadline, "SQS's redrive did not move the originals"
        sqs.receive_message(
            QueueUrl=env["ETL_QUEUE_URL"], MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=1
        )


def test_an_event_id_of_thousands_of_digits_does_not_stop_the_erasure(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """Attack 12, finding 3: a redriven original's event id of 5,000 digits crashed `erase` (exit 1, no counts).

    `int` refuses more than 4,300 digits; the person's letter after the poison was never checked,
    and every rerun crashed alike. Now the long run reads as no address (ip_spellings), and a
    letter whose matching fails would be counted as could not be checked, not stop the sweep.
    """
    tag = uuid.uuid4().hex[:8]
    ip, device = "203.0.113.58", f"erased-dev-{tag}"
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address, max_receive_count=2)
    poison = ("9" * 5000, json.dumps({**GOOD, "user_id": f"other-{tag}"}))
    theirs = (f"evt-{tag}-1", json.dumps({**GOOD, "user_id": f"erased-{tag}", "ip": ip, "device_id": device}))
    _redriven(sqs, env, [poison, theirs])

    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    for run in ("dry", "--yes"):
        swept = run_dead_letters(
            env,
            "erase",
            "-",
            *(["--yes"] if run == "--yes" else []),
            "--wait",
            "5",
            stdin=f"ip={ip}\n",
            token=operator_token,
        )
        assert swept.returncode == 0, (run, swept.returncode, swept.stderr[-2000:])
        assert "dead letters checked: 2" in swept.stdout and ": 1\n" in swept.stdout, swept.stdout
        assert ip not in swept.stdout + swept.stderr and device not in swept.stdout + swept.stderr
    left = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"])
    assert [m["MessageAttributes"]["event_id"]["StringValue"] for m in left] == [poison[0]]


def test_a_whole_number_in_an_event_id_deletes_only_letters_without_a_body(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    """Attack 12, finding 4: an order number that reads as the person's ip deleted other people's letters.

    Every group of 8 to 39 digits is some address as a number. On a letter whose body was read
    (sealed and opened, or in clear) the body decides; only a letter with no body kept (its
    event id is all there is) is deleted on a whole number.
    """
    tag = uuid.uuid4().hex[:8]
    ip = "203.0.113.59"
    number = int(ipaddress.ip_address(ip))  # by coincidence, other people's order number
    refused = json.dumps({**GOOD, "user_id": f"other-{tag}", "device_type": "toaster"})  # another person's
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address, max_receive_count=2)
    discarding = {k: v for k, v in env.items() if not k.startswith("ETL_DLQ_SEAL_")} | {"ETL_DLQ_BODIES": "discard"}
    with etl_consumer(discarding) as etl:
        send_events(sqs, etl.queue_url, [OutgoingEvent(f"order-{number}-1", refused)])
        assert etl.wired.consumer.drain().quarantined == 1
    with etl_consumer(env) as etl:
        send_events(sqs, etl.queue_url, [OutgoingEvent(f"order-{number}-2", refused)])
        assert etl.wired.consumer.drain().quarantined == 1
    _redriven(sqs, env, [(f"order-{number}-3", json.dumps({**GOOD, "user_id": f"other-{tag}"}))])
    letters = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"])
    assert len(letters) == 3 and {m["MessageAttributes"]["event_id"]["StringValue"] for m in letters} == {
        f"order-{number}-{i}" for i in (1, 2, 3)
    }

    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    swept = run_dead_letters(env, "erase", "-", "--yes", "--wait", "5", stdin=f"ip={ip}\n", token=operator_token)
    assert swept.returncode == 0, swept.stderr[-2000:]
    assert "deleted: 1" in swept.stdout and "left untouched: 2" in swept.stdout, swept.stdout
    left = {
        m["MessageAttributes"]["event_id"]["StringValue"]
        for m in all_dead_letters(stack_env["SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"])
    }
    assert left == {f"order-{number}-2", f"order-{number}-3"}  # the sealed one, the redriven one: bodies read
