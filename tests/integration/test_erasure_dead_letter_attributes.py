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
