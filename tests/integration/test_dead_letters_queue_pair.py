"""Every `dead-letters` command checks the queue pair first: exit 2, nothing read, nothing sent.

Insider round 9: the operator commands took ETL_QUEUE_URL and ETL_DLQ_URL on trust. `resend`
with ETL_QUEUE_URL naming the DLQ put the fixed body, ip and device id in clear, into the DLQ
and deleted the sealed letter (Break 4); `erase` against the source or another queue checked 0
letters and exited 0 while the person's letter stayed (Break 5); a DLQ redriving to a third
queue lost its letters there after a few `list`s, and a source without a redrive policy was
tied to no DLQ at all (Break 6). Real SQS (ministack), OpenBao (sealing, the operator's token),
Postgres and the vault for the ETL that dead-letters.

Synthetic TEST-NET values only; outputs are checked for them by booleans, never printed. The refused
commands run in-process (`run_dead_letters_here`: the same main, exit code and output, ~24 Python starts
saved); each test's one command that goes through runs as the operator's process.
"""

from __future__ import annotations

import json
import random
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devstack.events import OutgoingEvent, send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import queue_arn, read_all, run_dead_letters, run_dead_letters_here
from tests.malformed_samples import GOOD

if TYPE_CHECKING:
    pass

REFUSED = 2


def person() -> dict[str, str]:
    """A made-up person's values."""
    tag = uuid.uuid4().hex[:8]  # the user id does not hold the device id: the ETL would refuse it (own_value_in_field)
    return {"user_id": f"u-{tag}", "ip": f"203.0.113.{random.randrange(100, 200)}", "device_id": f"pair-{tag}"}


def with_sealed_letter(stack_env: dict[str, str], vault: RunningVault, values: dict[str, str]) -> dict[str, str]:
    """New queues whose DLQ holds one sealed dead letter of `values` (the ETL refused the event); their env."""
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        refused = OutgoingEvent(uuid.uuid4().hex, json.dumps({**GOOD, **values, "device_type": "toaster"}))
        send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), etl.queue_url, [refused])
        assert etl.wired.consumer.drain().quarantined == 1
    return env


def holds_any(text: str, values: dict[str, str]) -> bool:
    return any(value in text for value in values.values())


def assert_refused(done: subprocess.CompletedProcess[str], *expected: str, values: dict[str, str]) -> None:
    """Exit 2, a message naming both settings and `expected` (ARNs, the reason), none of the person's values."""
    output = done.stdout + done.stderr
    assert done.returncode == REFUSED, done.stderr[-2000:]
    assert "ETL_QUEUE_URL" in done.stderr and "ETL_DLQ_URL" in done.stderr
    assert all(text in done.stderr for text in expected), done.stderr[-2000:]
    assert not holds_any(output, values)
    assert "re-sent" not in done.stdout and "dead letters checked" not in done.stdout


def test_resend_with_the_dlq_as_source_or_another_queue_is_refused_and_the_sealed_letter_stays(
    stack_env: dict[str, str],
    vault: RunningVault,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Break 4: ETL_QUEUE_URL = ETL_DLQ_URL = the DLQ put the fixed body in clear into the DLQ, rc 0."""
    values = person()
    env = with_sealed_letter(stack_env, vault, values)
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    ((letter, reads, sealed),) = read_all(sqs, env["ETL_DLQ_URL"])
    assert not holds_any(sealed, values)
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({**GOOD, **values}))
    token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    other = etl_harness_env(stack_env, vault.address)["ETL_QUEUE_URL"]  # another environment's source, a typo
    dlq_arn = queue_arn(sqs, env["ETL_DLQ_URL"])
    wrong = {
        "the DLQ as source": ({"ETL_QUEUE_URL": env["ETL_DLQ_URL"]}, "names the source queue of ETL_QUEUE_URL"),
        "another source": ({"ETL_QUEUE_URL": other}, "is not the dead-letter queue of ETL_QUEUE_URL"),
    }
    for settings, reason in wrong.values():
        for args in (["resend", letter, "--body-file", str(fixed)], ["resend", letter], ["redrive"], ["list"]):
            done = run_dead_letters_here(monkeypatch, capsys, {**env, **settings}, *args, token=token)
            assert_refused(done, reason, dlq_arn, values=values)
        done = run_dead_letters_here(monkeypatch, capsys, {**env, **settings}, "delete", letter, "--yes")
        assert_refused(done, reason, dlq_arn, values=values)
    # Nothing read, nothing sent: the sealed letter alone, read once since (by read_all), the other queue empty.
    assert read_all(sqs, env["ETL_DLQ_URL"]) == [(letter, reads + 1, sealed)]
    assert read_all(sqs, other) == []
    # The right settings: re-sent to the source (the same command, so the refusals were the settings').
    resent = run_dead_letters(env, "resend", letter, "--body-file", str(fixed))
    assert resent.returncode == 0 and "re-sent as message" in resent.stdout, resent.stderr[-2000:]
    assert read_all(sqs, env["ETL_DLQ_URL"]) == []
    assert [count for _, count, _ in read_all(sqs, env["ETL_QUEUE_URL"])] == [1]


def test_erase_against_the_source_or_a_queue_that_is_not_its_redrive_target_is_refused_unread(
    stack_env: dict[str, str], vault: RunningVault, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Break 5: `erase` with ETL_DLQ_URL = the source or a stale DLQ checked 0 letters and exited 0."""
    values = person()
    env = with_sealed_letter(stack_env, vault, values)
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    stale = etl_harness_env(stack_env, vault.address)["ETL_DLQ_URL"]  # a DLQ of the same shape, of other queues
    send_events(sqs, env["ETL_QUEUE_URL"], [OutgoingEvent(uuid.uuid4().hex, json.dumps({**GOOD, **person()}))])
    sqs.send_message(QueueUrl=stale, MessageBody="a dead letter of another source")
    before = {url: read_all(sqs, url) for url in (env["ETL_QUEUE_URL"], env["ETL_DLQ_URL"], stale)}
    token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    criteria = "".join(f"{name}={value}\n" for name, value in values.items())
    source_arn, dlq_arn, stale_arn = (queue_arn(sqs, url) for url in before)
    wrong = {
        env["ETL_QUEUE_URL"]: ("names the source queue of ETL_QUEUE_URL", source_arn),
        stale: ("is not the dead-letter queue of ETL_QUEUE_URL", stale_arn),
    }
    for dlq_url, expected in wrong.items():
        for args in (["erase", "-"], ["erase", "-", "--yes"]):
            refused_env = {**env, "ETL_DLQ_URL": dlq_url}
            done = run_dead_letters_here(monkeypatch, capsys, refused_env, *args, stdin=criteria, token=token)
            assert_refused(done, *expected, values=values)
    # Nothing read: each message's receive count grew by read_all's own read only.
    after = {url: read_all(sqs, url) for url in before}
    assert after == {url: [(i, n + 1, b) for i, n, b in messages] for url, messages in before.items()}
    # The right DLQ: the letter is deleted, and the summary names the queue swept by its ARN.
    done = run_dead_letters(env, "erase", "-", "--yes", stdin=criteria, token=token)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "deleted: 1" in done.stdout and f"dead-letter queue swept: {dlq_arn}" in done.stdout
    assert not holds_any(done.stdout + done.stderr, values)
    assert read_all(sqs, env["ETL_DLQ_URL"]) == []


@pytest.mark.parametrize("case", ["a DLQ redriving to a third queue", "a source without a redrive policy"])
def test_queues_the_etl_refuses_at_start_stop_every_operator_command_too(
    stack_env: dict[str, str],
    vault: RunningVault,
    case: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Break 6: each `list` is a receive; with a DLQ redriving elsewhere the letters moved there (3 lists)."""
    values = person()
    env = with_sealed_letter(stack_env, vault, values)
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    source_arn, dlq_arn = queue_arn(sqs, env["ETL_QUEUE_URL"]), queue_arn(sqs, env["ETL_DLQ_URL"])
    third = sqs.create_queue(QueueName=f"third-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    if case == "a DLQ redriving to a third queue":
        redrive = json.dumps({"deadLetterTargetArn": queue_arn(sqs, third), "maxReceiveCount": "2"})
        sqs.set_queue_attributes(QueueUrl=env["ETL_DLQ_URL"], Attributes={"RedrivePolicy": redrive})
        expected = ("has a redrive policy of its own", dlq_arn, queue_arn(sqs, third))
    else:
        sqs.set_queue_attributes(QueueUrl=env["ETL_QUEUE_URL"], Attributes={"RedrivePolicy": ""})
        expected = ("has no redrive policy", source_arn, dlq_arn)
    token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    for _ in range(3):
        assert_refused(run_dead_letters_here(monkeypatch, capsys, env, "list"), *expected, values=values)
    assert_refused(run_dead_letters_here(monkeypatch, capsys, env, "redrive"), *expected, values=values)
    criteria = "".join(f"{name}={value}\n" for name, value in values.items())
    erased = run_dead_letters_here(monkeypatch, capsys, env, "erase", "-", "--yes", stdin=criteria, token=token)
    assert_refused(erased, *expected, values=values)
    # The letter is still in the DLQ, sealed (on main, the third `list` moved it on); the third queue is empty.
    ((_, _, sealed),) = read_all(sqs, env["ETL_DLQ_URL"])
    assert "sealed_body" in sealed and not holds_any(sealed, values)
    assert read_all(sqs, third) == []
