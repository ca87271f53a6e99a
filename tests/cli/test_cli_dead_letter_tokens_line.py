"""The officer's line `dead-letters erase` prints for minted tokens runs as pasted on the stack (walk44, W44-3).

`dead-letters erase`, run in the embedded stack's settings as README's DLQ operator block runs it, printed
`tokenvault erase TOKENS --user-id U --purpose REFERENCE --yes` - no connection options, so pasted as
printed it failed (exit 2: no database for the count) - and that erase's reminder then sent the officer
back to the DLQ operator's step that had printed it. The line now carries the stack's options and
`--from-dead-letters`, and `tokenvault erase` with that flag names no step to go back to. Its two
placeholders (`--user-id USER_ID`, `--purpose REFERENCE`) are the officer's to fill: left as printed, the
line is refused, nothing erased (review 38, R38-6).

The sweep's DLQ is the unit tests' stand-in (one letter recording the tokens, as the ETL seals it; the
real SQS run is tests/integration/test_erasure_reaches_tokens_of_a_dead_lettered_load.py); the tokens are
real, minted by the stack's vault, and the printed line runs in a shell against the stack.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import time
import uuid

import pytest

from etl_service.entrypoints.dead_letter_erasure import run_erase
from tests.cli.conftest import REPO, TOKENVAULT, CliStack
from tests.cli.test_cli_roles import tokenize
from tests.unit.test_dead_letter_erasure_per_letter import ListedOnce
from tests.unit.test_dead_letter_minted_tokens import KEY, letter


def test_the_printed_officers_line_erases_as_pasted_once_filled_and_sends_no_one_back_to_the_dead_letters(
    cli_stack: CliStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex[:6]
    ip, device = f"198.18.{int(tag[:2], 16)}.{int(tag[2:4], 16) % 250 + 1}", f"w44-device-{tag}"
    (ip_token,), (device_token,) = tokenize(cli_stack, "ip", ip), tokenize(cli_stack, "device_id", device)
    body = json.dumps({"user_id": f"u-w44-{tag}", "ip": ip, "device_id": device})
    texts = {"vault:v1:m-1": body, "c-1": json.dumps([ip_token, device_token])}
    # The DLQ operator's settings: the stack's stack.env sourced, ETL_QUEUE_URL its queue (README's block).
    for name, value in {**cli_stack.env, "ETL_QUEUE_URL": cli_stack.env["SQS_QUEUE_URL"]}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"user_id=u-w44-{tag}\n"))
    args = argparse.Namespace(stdin=["-"], yes=True, wait=0.0)
    assert run_erase(args, ListedOnce([letter("m-1", body, "c-1")]), KEY, texts.__getitem__) == 0  # type: ignore[arg-type]
    (printed,) = [line.strip() for line in capsys.readouterr().out.splitlines() if "erase ip_" in line]
    assert printed.startswith(f"tokenvault --stack {cli_stack.state_dir} --as privacy-officer erase "), printed
    # Pasted as printed, in the officer's shell (`. .venv/bin/activate`: tokenvault on PATH), nothing else set.
    shell = {"PATH": f"{TOKENVAULT.parent}:/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    shell |= {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}  # this checkout's code

    def paste(line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", line], cwd=REPO, env=shell, capture_output=True, text=True, timeout=60, check=False
        )

    # As printed, its two placeholders unfilled: refused before anything is counted or erased (review 38, R38-6).
    unfilled = paste(printed)
    assert unfilled.returncode == 2, unfilled.stdout + unfilled.stderr
    assert "--user-id USER_ID and --purpose REFERENCE" in unfilled.stderr and "nothing was erased" in unfilled.stderr
    # Filled from the request (its user id, its reference), in the same shell: erased.
    filled = printed.replace("--user-id USER_ID", f"--user-id u-w44-{tag}").replace("REFERENCE", "GDPR-W44-3")
    pasted = paste(filled)
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    assert pasted.stdout.count("erased") == 2
    assert "Next step of this erasure, for the DLQ operator" not in pasted.stderr, pasted.stderr
    assert "nothing else is left to do for them" in pasted.stderr
    gone = cli_stack.as_("fraud-investigator", "reveal", ip_token, device_token, "--purpose", "CASE-W44-3")
    assert gone.returncode == 1 and gone.stdout.count("NOT_FOUND") == 2
    # A token other people's rows hold is refused as always; the command it gives to go on keeps the flag.
    # A token other people's rows hold (other tests' rows may hold none), rows the ETL loaded and signed: not one
    # planted by the database owner without a signature (tests/cli/test_cli_untrusted_data.py's), which `erase`
    # refuses first, for that reason alone (attack 41, A41-1).
    ((shared,),) = cli_stack.analyst_query(
        "SELECT masked_ip FROM user_logins WHERE masked_ip ~ '^ip_[A-Za-z0-9_-]{22}$' GROUP BY masked_ip"
        " HAVING bool_and(row_manifest IS NOT NULL) ORDER BY min(event_id) LIMIT 1"
    )
    refused = cli_stack.as_(
        "privacy-officer",
        "erase",
        str(shared),
        "-u",
        f"u-w44-{tag}",
        "-p",
        "GDPR-W44-3",
        "--from-dead-letters",
        "--yes",
    )
    assert refused.returncode == 1 and "nothing was erased" in refused.stderr, refused.stderr
    (again,) = [line for line in refused.stderr.splitlines() if "--including-other-people" in line]
    assert again.strip().endswith("--from-dead-letters --yes"), again
    print(f"\nW44-3: the printed line erased both tokens as pasted; {time.monotonic() - started:.1f} s")
