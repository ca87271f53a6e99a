"""A dead-letter key OpenBao will not use stops `dead-letters erase/show/resend` loudly, naming the setting.

ETL_DLQ_SEAL_KEY, the DLQ operator's copy of the ETL's setting, names the only Transit key
sealed bodies are opened with. Misspelt, OpenBao refuses the operator's token that key (its
policy names the right one); pointed at an OpenBao without the key (ETL_DLQ_SEAL_VAULT_ADDR
wrong, the key never created), OpenBao answers "encryption key not found" for every letter.
Either is the operator's configuration, not the letters: `erase` used to go through the whole
DLQ counting every sealed letter as tampered or as could-not-be-opened, and show/resend called
genuine letters tampered or planted. Now each stops before the DLQ is touched with exit 2 (the
dead-letters commands' settings error), naming ETL_DLQ_SEAL_KEY and the key, no value. So does a
plain-http OpenBao address on another host. show/resend used to receive every dead letter first
(review B, finding 5): each letter's receive count went up, bringing it nearer to SQS's own limits
for no reason; the test reads the counts before and after, which a count of letters could not.

Real SQS (ministack), the session's OpenBao (sealing, the operator's token) and, for the missing
key, a second OpenBao of its own. Synthetic TEST-NET values only; checks reduced to booleans. The
commands expected to stop run in-process (`run_dead_letters_here`: the same main, exit code and output,
without a Python start each); those that go through run as the operator's process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from devstack.events import OutgoingEvent, send_events
from devstack.openbao import POLICY_DIR, start_openbao
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters, read_all, run_dead_letters, run_dead_letters_here
from tests.malformed_samples import GOOD

MISSPELT = "tokenvault-dead-leters"
REMOTE_PLAIN = "http://203.0.113.10:8200"
"""An OpenBao address beyond this machine over plain http (TEST-NET: nothing answers there)."""
SETTINGS_ERROR = 2


@pytest.fixture
def dlq_with_the_persons_letters(
    stack_env: dict[str, str], vault: RunningVault
) -> Iterator[tuple[dict[str, str], str]]:
    """A fresh queue pair whose DLQ holds three sealed dead letters, two of them the person's: (env, criteria)."""
    tag = uuid.uuid4().hex[:8]
    user, ip, device = f"keyset-{tag}", "203.0.113.171", f"keyset-dev-{tag}"  # the person (synthetic)
    refused = {
        f"{tag}-p-toaster": json.dumps(
            {**GOOD, "user_id": user, "ip": ip, "device_id": device, "device_type": "toaster"}
        ),
        f"{tag}-p-version": json.dumps({**GOOD, "user_id": user, "ip": ip, "device_id": device, "app_version": "x"}),
        f"{tag}-o-toaster": json.dumps({**GOOD, "user_id": f"other-{tag}", "device_type": "toaster"}),
    }
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        send_events(
            sqs_client(stack_env["SQS_ENDPOINT_URL"]), etl.queue_url, [OutgoingEvent(i, b) for i, b in refused.items()]
        )
        assert etl.wired.consumer.drain().quarantined == 3
    yield env, f"user_id={user}\nip={ip}\ndevice_id={device}\n"


def left_in_dlq(stack_env: dict[str, str], env: dict[str, str]) -> int:
    return len(all_dead_letters(stack_env["SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"]))


def receive_counts(stack_env: dict[str, str], env: dict[str, str]) -> dict[str, int]:
    """Each dead letter's ApproximateReceiveCount; this read itself adds one to each."""
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    return {message_id: count for message_id, count, _ in read_all(sqs, env["ETL_DLQ_URL"])}


def names_the_setting(stderr: str, key: str) -> bool:
    return "ETL_DLQ_SEAL_KEY" in stderr and repr(key) in stderr


def test_a_misspelt_dead_letter_key_or_a_plain_openbao_address_stops_erase_show_and_resend_before_any_receive(
    stack_env: dict[str, str],
    dlq_with_the_persons_letters: tuple[dict[str, str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env, criteria = dlq_with_the_persons_letters
    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    misspelt = {**env, "ETL_DLQ_SEAL_KEY": MISSPELT}
    message_id = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"])[0]["MessageId"]
    outputs: list[str] = []
    counts = receive_counts(stack_env, env)

    erase = run_dead_letters_here(
        monkeypatch, capsys, misspelt, "erase", "-", "--yes", "--wait", "0", stdin=criteria, token=operator_token
    )
    outputs.append(erase.stdout + erase.stderr)
    assert erase.returncode == SETTINGS_ERROR, erase.stdout + erase.stderr
    assert names_the_setting(erase.stderr, MISSPELT), erase.stderr
    assert "dead letters checked" not in erase.stdout  # stopped before reading the DLQ

    for args in (["show", message_id], ["resend", message_id]):
        done = run_dead_letters_here(monkeypatch, capsys, misspelt, *args, token=operator_token)
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == SETTINGS_ERROR, (args, done.stderr)
        assert names_the_setting(done.stderr, MISSPELT) and "tamper" not in done.stderr, done.stderr

    plain = {**env, "ETL_DLQ_SEAL_VAULT_ADDR": REMOTE_PLAIN}
    for args in (["show", message_id], ["resend", message_id]):
        done = run_dead_letters_here(monkeypatch, capsys, plain, *args, token=operator_token)
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == SETTINGS_ERROR, (args, done.stderr)
        assert "ETL_DLQ_SEAL_VAULT_PLAINTEXT=allow" in done.stderr, done.stderr

    # Every letter is still there, and no refused command received one: only this second read counts.
    assert receive_counts(stack_env, env) == {message: count + 1 for message, count in counts.items()}

    listing = run_dead_letters(misspelt, "list")  # no token, no OpenBao: it says what to check first
    outputs.append(listing.stdout + listing.stderr)
    assert listing.returncode == 0 and "ETL_DLQ_SEAL_KEY" in listing.stderr, listing.stderr

    # Set right, the same run deletes the person's two letters.
    right = run_dead_letters(env, "erase", "-", "--yes", "--wait", "0", stdin=criteria, token=operator_token)
    outputs.append(right.stdout + right.stderr)
    assert right.returncode == 0, right.stderr
    assert "deleted: 2" in right.stdout and left_in_dlq(stack_env, env) == 1

    texts = "\n".join(outputs)
    leaked = [line for line in criteria.splitlines() if line.split("=", 1)[1] in texts]
    assert leaked == [], "the person's values appear in the commands' output"


def test_an_openbao_without_the_dead_letter_key_stops_erase_and_show_instead_of_counting_letters_unopenable(
    stack_env: dict[str, str],
    dlq_with_the_persons_letters: tuple[dict[str, str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env, criteria = dlq_with_the_persons_letters
    other = start_openbao(tmp_path / "openbao.log")  # the operator's settings point here: no dead-letter key
    try:
        root = hvac.Client(url=other.address, token=other.root_token)
        root.sys.enable_secrets_engine("transit")
        policy = "tokenvault-dlq-operator"
        root.sys.create_or_update_policy(policy, (POLICY_DIR / f"{policy}.hcl").read_text())
        token = root.auth.token.create(policies=[policy], ttl="1h")["auth"]["client_token"]
        elsewhere = {**env, "ETL_DLQ_SEAL_VAULT_ADDR": other.address}
        message_id = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], env["ETL_DLQ_URL"])[0]["MessageId"]

        erase = run_dead_letters_here(
            monkeypatch, capsys, elsewhere, "erase", "-", "--yes", "--wait", "0", stdin=criteria, token=token
        )
        assert erase.returncode == SETTINGS_ERROR, erase.stdout + erase.stderr
        assert names_the_setting(erase.stderr, "tokenvault-dead-letters") and "not found" in erase.stderr
        assert "could not be opened" not in erase.stderr and "dead letters checked" not in erase.stdout
        assert left_in_dlq(stack_env, env) == 3

        show = run_dead_letters_here(monkeypatch, capsys, elsewhere, "show", message_id, token=token)
        assert show.returncode == SETTINGS_ERROR, show.stderr
        assert names_the_setting(show.stderr, "tokenvault-dead-letters") and "planted" not in show.stderr
        values = [line.split("=", 1)[1] for line in criteria.splitlines()]
        assert not [v for v in values if v in erase.stdout + erase.stderr + show.stdout + show.stderr]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(other.pid, signal.SIGKILL)


def test_a_token_that_stops_working_part_way_through_erase_still_reports_what_was_deleted(
    stack_env: dict[str, str], dlq_with_the_persons_letters: tuple[dict[str, str], str]
) -> None:
    """OpenBao refusing the key mid-sweep (here: a token good for three requests) stops the run after a report.

    The probe and two letters use the token up; the third letter's decrypt is refused (403), as
    when the token is revoked or its policy changed during `--wait`. At least one of the two
    letters opened is the person's (two of the three are), so the run deleted something before it
    stopped: its counts must say how much, and match what is gone (review B, finding 9).
    """
    env, criteria = dlq_with_the_persons_letters
    root = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    three_uses = root.auth.token.create(policies=["tokenvault-dlq-operator"], ttl="10m", num_uses=3)
    token = three_uses["auth"]["client_token"]

    erase = run_dead_letters(env, "erase", "-", "--yes", "--wait", "0", stdin=criteria, token=token)
    assert erase.returncode == SETTINGS_ERROR, erase.stdout + erase.stderr
    deleted = 3 - left_in_dlq(stack_env, env)
    assert deleted >= 1
    assert f"holding the person's values, deleted: {deleted}" in erase.stdout, erase.stdout
    assert "dead letters checked: 2" in erase.stdout, erase.stdout
    assert "stopped part-way" in erase.stderr and names_the_setting(erase.stderr, "tokenvault-dead-letters")
    assert "dead-letter queue swept" in erase.stdout  # which queue the deletions were in
    values = [line.split("=", 1)[1] for line in criteria.splitlines()]
    assert not [v for v in values if v in erase.stdout + erase.stderr]
