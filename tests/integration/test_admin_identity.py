"""Administrative commands record who ran them from the operator's Vault token (real OpenBao
and Postgres), never from a free-text flag; an unknown or unauthorized token is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import hvac
import psycopg

from devstack.stack import vault_service_env

REPO = Path(__file__).resolve().parents[2]


def admin(env: dict[str, str], *args: str, **operator: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vault_service.admin", *args],
        env={**vault_service_env(env), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), **operator},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def audited(env: dict[str, str], reason: str) -> list[tuple[str, str]]:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute("SELECT client, action FROM vault.audit_log WHERE purpose = %s", (reason,)).fetchall()
    return [(str(client), str(action)) for client, action in rows]


def test_an_admin_command_is_audited_under_the_identity_of_the_vault_token(stack_env: dict[str, str]) -> None:
    token_file = stack_env["VAULT_SECURITY_TOKEN_FILE"]
    reason = f"CHG-{uuid.uuid4().int % 10**7}"  # a reference: 8 digits read as an identifier
    done = admin(stack_env, "rewrap", "--reason", reason, VAULT_SECURITY_TOKEN_FILE=token_file)
    assert done.returncode == 0, done.stderr
    token = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(token_file).read_text())
    accessor = token.auth.token.lookup_self()["data"]["accessor"]
    operator = f"vault:token-security-team accessor={accessor}"
    assert audited(stack_env, reason) == [(operator, "rewrap"), (operator, "rewrap")]  # its intent, its outcome


def test_a_bogus_or_unauthorized_token_is_refused_and_nothing_is_done(stack_env: dict[str, str]) -> None:
    root = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text())
    analyst_token = root.auth.token.create(policies=["default"], ttl="5m", display_name="analyst")["auth"]
    reason = f"CHG-{uuid.uuid4().int % 10**7}"  # a reference: 8 digits read as an identifier
    bogus = admin(stack_env, "rewrap", "--reason", reason, VAULT_TOKEN="hvs.not-a-real-token")
    assert bogus.returncode == 3 and "does not accept this token" in bogus.stderr
    weak = admin(stack_env, "rewrap", "--reason", reason, VAULT_TOKEN=analyst_token["client_token"])
    assert weak.returncode == 3 and "none of the policies tokenvault-security" in weak.stderr
    missing = admin(stack_env, "rewrap", "--reason", reason)
    assert missing.returncode == 3 and "VAULT_TOKEN" in missing.stderr
    assert audited(stack_env, reason) == []


def test_a_free_text_actor_is_refused(stack_env: dict[str, str]) -> None:
    reason = f"CHG-{uuid.uuid4().int % 10**7}"  # a reference: 8 digits read as an identifier
    forged = admin(
        stack_env,
        "--actor",
        "alice",
        "rewrap",
        "--reason",
        reason,
        VAULT_SECURITY_TOKEN_FILE=stack_env["VAULT_SECURITY_TOKEN_FILE"],
    )
    assert forged.returncode == 2 and "--actor is refused" in forged.stderr
    assert audited(stack_env, reason) == []
