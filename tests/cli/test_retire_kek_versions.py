"""`tokenvault retire-kek-versions`: the runbook's step 3, refused while a data key still needs an old KEK version.

On the session's embedded stack (real OpenBao, Postgres, the running vault service). The running
service rewraps outdated data keys itself within one key-check interval (15 s), so the test holds
the data key rows with `FOR SHARE` while it acts: the service's own rewrap waits, as it would
with every replica stopped or not yet round, and the keys stay under the older version.
Versions are read, never assumed: the runbook's test rotates the same KEK.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hvac
import psycopg

from tests.cli.conftest import CliStack
from vault_service.service.ports import INTENT_HELD

TICKET = "CHG-2026-0901"
CONFIG = "transit/keys/tokenvault/config"


def _vault(stack: CliStack, token_file: str) -> hvac.Client:
    return hvac.Client(url=stack.env["VAULT_ADDR"], token=Path(stack.env[token_file]).read_text().strip())


def _kek(root: hvac.Client) -> dict[str, Any]:
    data: dict[str, Any] = root.secrets.transit.read_key(name="tokenvault")["data"]
    return data


def _settings(root: hvac.Client) -> tuple[int, int]:
    kek = _kek(root)
    return int(kek["min_decryption_version"]), int(kek["min_encryption_version"])


def _retire(stack: CliStack, below: int, env: dict[str, str] | None = None) -> Any:
    args = ("retire-kek-versions", "--below", str(below), "--reason", TICKET)
    return stack.run("--stack", str(stack.state_dir), "--as", "security", *args, env=env)


def _wait_for_the_service_rewrap(dsn: str, latest: int, timeout: float = 40) -> None:
    """Until every key the service loads is wrapped by `latest` (the running service rewraps them itself)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(dsn) as conn:
            old = conn.execute(
                "SELECT count(*) FROM vault.data_keys WHERE (state <> 'retired' OR purpose = 'audit')"
                " AND wrapped_key NOT LIKE %s",
                (f"vault:v{latest}:%",),
            ).fetchone()
        if old and old[0] == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"the running vault service did not rewrap its data keys under v{latest} in {timeout:.0f} s")


def test_retiring_is_refused_while_a_data_key_needs_an_older_version_and_done_once_none_does(
    cli_stack: CliStack,
) -> None:
    root = _vault(cli_stack, "VAULT_ROOT_TOKEN_FILE")
    security = _vault(cli_stack, "VAULT_SECURITY_TOKEN_FILE")
    dsn = cli_stack.env["PG_ADMIN_DSN"]
    with psycopg.connect(dsn) as hold:  # the service's rewrap waits on these rows until the block ends
        hold.execute("SELECT id FROM vault.data_keys FOR SHARE")
        security.write_data("transit/keys/tokenvault/rotate")
        latest = int(_kek(root)["latest_version"])
        before = _settings(root)

        refused = _retire(cli_stack, latest)
        assert refused.returncode == 1 and "FAILED_PRECONDITION" in refused.stderr, refused.stderr
        assert f"still wrapped under KEK versions below v{latest}" in refused.stderr
        assert f"(audit, active, v{latest - 1})" in refused.stderr  # each key named, with its version
        assert "run `tokenvault rewrap --reason <ticket>` first" in refused.stderr
        assert "nothing was changed in Transit" in refused.stderr
        assert _settings(root) == before

        past = _retire(cli_stack, latest + 1)
        assert past.returncode == 1 and f"has no version {latest + 1}: its latest is v{latest}" in past.stderr
        lower = _retire(cli_stack, before[0] - 1) if before[0] > 1 else None
        if lower is not None:
            assert lower.returncode == 1 and "would bring retired versions back" in lower.stderr
        dlq_token = Path(cli_stack.env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
        not_security = _retire(cli_stack, latest, env={"VAULT_TOKEN": dlq_token})
        assert not_security.returncode == 1 and "PERMISSION_DENIED" in not_security.stderr, not_security.stderr
        assert "none of the policies tokenvault-security" in not_security.stderr
        assert dlq_token not in not_security.stderr + not_security.stdout  # the vault never echoes the token
        assert _settings(root) == before

        # What the check prevents: the raw write, done now, leaves those keys unreadable to any new process.
        security.write_data(CONFIG, data={"min_decryption_version": latest, "min_encryption_version": latest})
        stuck = cli_stack.as_("security", "status")
        assert stuck.returncode == 1 and "disallowed by policy (too old)" in stuck.stderr, stuck.stderr
        security.write_data(CONFIG, data={"min_decryption_version": before[0], "min_encryption_version": before[1]})
        assert _settings(root) == before  # not trimmed yet: lowering it again brings the keys back
        hold.rollback()

    _wait_for_the_service_rewrap(dsn, latest)  # what `tokenvault rewrap` does now, the service did by itself
    done = _retire(cli_stack, latest)
    assert done.returncode == 0, done.stderr
    assert f"min_encryption_version raised to {latest}" in done.stdout
    assert _settings(root) == (latest, latest)
    status = cli_stack.as_("security", "status")
    assert status.returncode == 0 and f"safe min_decryption_version   : {latest}" in status.stdout
    # What retire-kek-versions did, as Transit holds it now, beside the keys' versions (review 27 closing note).
    assert f"KEK min_decryption_version    : v{latest} (versions below it retired in Transit)" in status.stdout
    retired_below = [line for line in status.stdout.splitlines() if "(below the minimum)" in line]
    with psycopg.connect(dsn) as conn:
        unreadable = conn.execute(
            "SELECT count(*) FROM vault.data_keys WHERE vault.kek_version(wrapped_key) < %s", (latest,)
        ).fetchone()
    assert unreadable is not None and len(retired_below) == unreadable[0]
    assert all(" retired " in line for line in retired_below)  # only retired keys may be past it

    with psycopg.connect(dsn) as conn:
        outcomes = [
            row[0]
            for row in conn.execute(
                "SELECT outcome FROM vault.audit_log WHERE action = 'retire-kek-versions' AND purpose = %s ORDER BY id",
                (TICKET,),
            ).fetchall()
        ]
    refusals = 3 if lower is not None else 2  # the DLQ operator's token wrote nothing: refused before any row
    assert outcomes[::2] == [INTENT_HELD] * (refusals + 1)
    assert all(o.startswith("refused: ") for o in outcomes[1 : 2 * refusals : 2])
    assert outcomes[-1].startswith(f"ok: KEK tokenvault versions below v{latest} retired")
