"""`tokenvault erase` over the erase limit stops and says what it erased, instead of waiting in silence.

The shipped limit lets the privacy officer erase 100 tokens at once, then 18 an hour. Erasing 101
tokens erased 100 and then waited, printing nothing, for the limit to let the last one through:
the command's client waits out rate limits for up to an hour (right for reveals, which show a
progress bar), and the erasure's own "stopped after N of M" report was never reached. A person
who gave up (Ctrl-C) had no word of the 100 erased (documentation walk, 4 December). Now the
erase limit stops the command at once: the table lists each token erased or not sent, stderr
says when to send the rest, exit 1.

Against real Postgres and OpenBao, the vault on a database of the test's own (the erase budget
lives in the database: draining the stack's would refuse later tests' erasures), the command
run as a person runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import running_vault
from tests.integration.audit_attacks import own_database
from tests.integration.erase_calls import SHIPPED_ERASE_LIMIT, new_ip_tokens

__all__ = ["own_database"]  # fixture used here, defined beside the audit tests


def _erase_over_the_limit(env: dict[str, str], extra: int) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """`tokenvault erase` of burst + `extra` new tokens on a fresh budget, as the privacy officer runs it."""
    with running_vault(env) as vault:
        tokens = new_ip_tokens(env, vault.address, SHIPPED_ERASE_LIMIT.burst + extra)
        command = [sys.executable, "-m", "tokenvault_cli", "--address", vault.address, "--ca", env["TLS_CA_CERT"]]
        command += ["--cert", env["PRIVACY_OFFICER_TLS_CERT"], "--key", env["PRIVACY_OFFICER_TLS_KEY"]]
        command += ["--server-name", "localhost", "erase", "-", "--purpose", "GDPR-2026-404", "--yes", "-o", "csv"]
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENVAULT_", "VAULT_"))}
        clean["TOKENVAULT_ANALYST_DSN"] = env["PG_ANALYST_DSN"]  # erase counts other people's rows first (E3)
        done = subprocess.run(  # it waited ~200 s for the 101st token's share of the limit
            command, input="\n".join(tokens), env=clean, capture_output=True, text=True, timeout=60, check=False
        )
    return tokens, done


def test_an_erasure_over_the_limit_stops_at_once_listing_what_it_erased(own_database: dict[str, str]) -> None:
    burst = SHIPPED_ERASE_LIMIT.burst
    tokens, done = _erase_over_the_limit(own_database, 1)
    assert done.returncode == 1, done.stderr
    rows = dict(line.split(",", 1) for line in done.stdout.splitlines()[1:])
    assert [rows[t] for t in tokens] == ["erased"] * burst + ["not sent: erase limit reached"], done.stdout
    assert f"stopped this after {burst} of {burst + 1} tokens" in done.stderr, done.stderr
    assert "send the 1 not sent again once it has room" in done.stderr, done.stderr
    assert "dead-letters erase" in done.stderr, done.stderr


def test_an_erasure_of_more_than_is_left_uses_all_that_is_left_and_names_the_rate(
    own_database: dict[str, str],
) -> None:
    """Walk 48, W48-7: 105 tokens against a burst of 100 erased 52 (the call of 105 halved once, the second half
    refused whole) and said to send the 53 again in a wait that let only 52 through. Now the refused half is halved
    again until all that is left is used, and the refusal names the limit's rate."""
    burst = SHIPPED_ERASE_LIMIT.burst
    tokens, done = _erase_over_the_limit(own_database, 5)
    assert done.returncode == 1, done.stderr
    rows = dict(line.split(",", 1) for line in done.stdout.splitlines()[1:])
    outcomes = [rows[t] for t in tokens]
    assert outcomes == ["erased"] * burst + ["not sent: erase limit reached"] * 5, outcomes.count("erased")
    assert f"stopped this after {burst} of {burst + 5} tokens" in done.stderr, done.stderr
    assert f"(burst {burst})" in done.stderr and "refills at its rate" in done.stderr, done.stderr
