"""`dead-letters show` on real SQS: a producer's body cannot drive the operator's terminal (attack 17, finding 6).

A producer sends a body holding 8-bit controls (CSI clear screen, OSC 52 clipboard write) and a
bidi override (an ip shown as another); SQS's redrive policy moves it to the DLQ in clear. `show`
printed it byte for byte. Now it prints unprintable characters as escapes, and `--output FILE`
writes the exact body to a new file of mode 0600. Real SQS (ministack), as the operator runs the
command. Synthetic values only.
"""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_harness_env
from tests.integration.dead_letters import redrive, run_dead_letters, send

HOSTILE = '{"user_id": "u-17", "ip": "\u202e7.311.0.302\u202c",\n "note": "\x9b2J\x9d52;c;Y3VybA==\x9c"}'


def test_show_escapes_a_producers_controls_and_output_keeps_the_exact_body(
    stack_env: dict[str, str], vault: RunningVault, tmp_path: Path
) -> None:
    endpoint = stack_env["SQS_ENDPOINT_URL"]
    sqs = sqs_client(endpoint)
    env = etl_harness_env(stack_env, vault.address, max_receive_count=2)
    send(sqs, env["ETL_QUEUE_URL"], f"evt-{uuid.uuid4().hex[:8]}", HOSTILE)
    [moved] = redrive(sqs, env["ETL_QUEUE_URL"], env["ETL_DLQ_URL"], endpoint, expected=1)
    assert moved["Body"] == HOSTILE  # SQS kept every character the producer sent

    shown = run_dead_letters(env, "show", moved["MessageId"])
    assert shown.returncode == 0, shown.stderr
    raw_on_terminal = [c for c in ("\x9b", "\x9d", "\x9c", "\u202e", "\u202c") if c in shown.stdout]
    assert raw_on_terminal == []
    assert "\\u202e7.311.0.302\\u202c" in shown.stdout and "\\x9b2J" in shown.stdout
    assert "5 unprintable character(s) printed as escapes" in shown.stderr

    target = tmp_path / "body.json"
    written = run_dead_letters(env, "show", moved["MessageId"], "--output", str(target))
    assert written.returncode == 0, written.stderr
    assert target.read_text(encoding="utf-8") == HOSTILE
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "7.311" not in written.stdout
