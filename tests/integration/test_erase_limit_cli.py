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


def test_an_erasure_over_the_limit_stops_at_once_listing_what_it_erased(own_database: dict[str, str]) -> None:
    env = own_database
    burst = SHIPPED_ERASE_LIMIT.burst
    with running_vault(env) as vault:
        tokens = new_ip_tokens(env, vault.address, burst + 1)
        command = [sys.executable, "-m", "tokenvault_cli", "--address", vault.address, "--ca", env["TLS_CA_CERT"]]
        command += ["--cert", env["PRIVACY_OFFICER_TLS_CERT"], "--key", env["PRIVACY_OFFICER_TLS_KEY"]]
        command += ["--server-name", "localhost", "erase", "-", "--purpose", "GDPR-2026-404", "--yes", "-o", "csv"]
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENVAULT_", "VAULT_"))}
        clean["TOKENVAULT_ANALYST_DSN"] = env["PG_ANALYST_DSN"]  # erase counts other people's rows first (E3)
        done = subprocess.run(  # it waited ~200 s for the 101st token's share of the limit
            command, input="\n".join(tokens), env=clean, capture_output=True, text=True, timeout=60, check=False
        )
    assert done.returncode == 1, done.stderr
    rows = dict(line.split(",", 1) for line in done.stdout.splitlines()[1:])
    assert [rows[t] for t in tokens] == ["erased"] * burst + ["not sent: erase limit reached"], done.stdout
    assert f"stopped this after {burst} of {burst + 1} tokens" in done.stderr, done.stderr
    assert "again in" in done.stderr and "dead-letters erase" in done.stderr, done.stderr
