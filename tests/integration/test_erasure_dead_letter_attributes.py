"""`dead-letters erase` matches a dead letter's attributes, not only its body (attack 10, finding 4).

With ETL_DLQ_BODIES=discard (or a body over the size limit) a dead letter keeps no body: its
event id is all that is left of it. A producer that builds event ids from a device id (an IDFV)
or a user id leaves the person named there; the erasure ignored attributes, reported
`deleted: 0` and exited 0 while the DLQ still named the person. Real SQS (ministack), OpenBao
(the operator's token and the dead-letter key are checked first), Postgres and the vault.

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


def test_a_bodiless_dead_letter_whose_event_id_names_the_person_is_erased_and_only_it(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    tag = uuid.uuid4().hex[:8]
    device, user = str(uuid.uuid4()), f"erased-{tag}"  # the person: an IDFV, a user id
    refused = json.dumps({**GOOD, "device_type": "toaster"})  # refused; in discard mode its body is not kept
    theirs = [device, f"login-{user}-17"]  # the IDFV as the event id; the user id as a group of it
    others = [str(uuid.uuid4()), f"login-{user}x-17"]  # another IDFV; a longer user id
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address)
    discarding = {k: v for k, v in env.items() if not k.startswith("ETL_DLQ_SEAL_")} | {"ETL_DLQ_BODIES": "discard"}
    with etl_consumer(discarding) as etl:
        send_events(sqs, etl.queue_url, [OutgoingEvent(event_id, refused) for event_id in theirs + others])
        summary = etl.wired.consumer.drain()
    assert (summary.loaded, summary.quarantined) == (0, 4)
    stored = {
        m["MessageAttributes"]["event_id"]["StringValue"]
        for m in all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    }
    assert stored == {*theirs, *others}

    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    criteria = f"user_id={user}\ndevice_id={device.upper()}\n"  # an IDFV is written in either case
    swept = run_dead_letters(env, "erase", "-", "--yes", "--wait", "5", stdin=criteria, token=operator_token)
    assert swept.returncode == 0, swept.stderr
    assert "deleted: 2" in swept.stdout and "left untouched: 2" in swept.stdout, swept.stdout
    left = {
        m["MessageAttributes"]["event_id"]["StringValue"]
        for m in all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    }
    assert left == set(others)
    texts = swept.stdout + swept.stderr
    leaked = [
        kind for kind, value in (("user_id", user), ("device_id", device)) if value.casefold() in texts.casefold()
    ]
    assert leaked == [], "the person's values appear in the command's output"
