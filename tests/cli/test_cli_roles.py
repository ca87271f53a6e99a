"""`tokenvault` as each role of the embedded stack: what it may do works, what it may not is refused clearly."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import click
import psycopg
from click.testing import CliRunner

from devstack import certs
from tests.cli.conftest import TOKENVAULT, CliStack
from tokenvault_cli.app import cli


def fresh_ip() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


def fresh_device() -> str:
    n = uuid.uuid4().int
    return f"{n % 900 + 100}-{(n >> 10) % 90 + 10}-{(n >> 20) % 9000 + 1000}"


def tokenize(stack: CliStack, token_type: str, *values: str) -> list[str]:
    done = stack.as_("etl-service", "tokenize", "--type", token_type, "-o", "json", "-", stdin="\n".join(values))
    assert done.returncode == 0, done.stderr
    return [row["token"] for row in json.loads(done.stdout)]


def test_every_subcommand_has_help() -> None:
    runner = CliRunner()

    def walk(group: click.Group, path: list[str]) -> list[list[str]]:
        found = [path]
        for name, command in group.commands.items():
            found += walk(command, [*path, name]) if isinstance(command, click.Group) else [[*path, name]]
        return found

    paths = walk(cli, [])
    assert {"reveal", "erase", "tokenize", "status", "rewrap", "reencrypt", "reindex"} <= {p[-1] for p in paths if p}
    assert ["audit", "verify"] in paths and ["audit", "who-saw"] in paths
    for path in paths:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0 and result.output.startswith("Usage: "), path
        description = result.output.split("\n\n")[1].strip()
        assert len(description) > 20 and not description.startswith("Options:"), path


def test_the_console_script_is_installed(cli_stack: CliStack) -> None:
    done = cli_stack.run("--help")
    assert done.returncode == 0 and "--stack" in done.stdout and "reveal" in done.stdout


def test_the_analyst_reveals_ips_plain_and_device_ids_masked(cli_stack: CliStack) -> None:
    ip, device = fresh_ip(), fresh_device()
    (ip_token,), (device_token,) = tokenize(cli_stack, "ip", ip), tokenize(cli_stack, "device_id", device)
    done = cli_stack.as_("analyst", "reveal", ip_token, device_token, "--purpose", "CASE-101", "-o", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["token"], r["value"], r["reveal"]) for r in rows] == [
        (ip_token, ip, "plain"),
        (device_token, "***-**-" + device[-4:], "masked"),
    ]
    table = cli_stack.as_("analyst", "reveal", ip_token, "--purpose", "CASE-101")
    assert table.returncode == 0 and ip_token in table.stdout and ip in table.stdout  # whole, in a table


def test_the_fraud_investigator_sees_device_ids_plain(cli_stack: CliStack) -> None:
    device = fresh_device()
    (token,) = tokenize(cli_stack, "device_id", device)
    done = cli_stack.as_("fraud-investigator", "reveal", token, "--purpose", "CASE-102", "-o", "csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == f"{token},device_id,{device},plain"


def test_the_privacy_officer_erases_and_the_value_is_gone(cli_stack: CliStack) -> None:
    (token,) = tokenize(cli_stack, "ip", fresh_ip())
    erased = cli_stack.as_("privacy-officer", "erase", token, "--purpose", "GDPR-2026-7", "--yes")
    assert erased.returncode == 0, erased.stderr
    assert token in erased.stdout and "erased" in erased.stdout
    after = cli_stack.as_("fraud-investigator", "reveal", token, "--purpose", "CASE-103")
    assert after.returncode == 1 and "NOT_FOUND" in after.stdout and "1 NOT_FOUND" in after.stderr
    again = cli_stack.as_("privacy-officer", "erase", token, "--purpose", "GDPR-2026-7", "--yes")
    assert again.returncode == 1 and "NOT_FOUND" in again.stdout


def test_erasure_asks_for_confirmation(cli_stack: CliStack) -> None:
    (token,) = tokenize(cli_stack, "ip", fresh_ip())
    done = cli_stack.as_("privacy-officer", "erase", token, "--purpose", "GDPR-2026-8")
    assert done.returncode == 2 and "--yes" in done.stderr


def test_an_empty_standard_input_sends_nothing_and_is_no_error(cli_stack: CliStack) -> None:
    # The vault refuses calls without items (INVALID_ARGUMENT); the command answers them itself.
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as conn:
        (before,) = conn.execute("SELECT coalesce(max(id), 0) FROM vault.audit_log").fetchone() or (0,)
    cases = [
        ("analyst", ["reveal", "-", "--purpose", "CASE-104"], "no tokens"),
        ("privacy-officer", ["erase", "-", "--purpose", "GDPR-2026-9", "--yes"], "no tokens"),
        ("etl-service", ["tokenize", "--type", "ip", "-"], "no values"),
    ]
    for role, args, says in cases:
        done = cli_stack.as_(role, *args, stdin="\n")
        assert done.returncode == 0, (role, done.stderr)
        assert says in done.stderr and "nothing was sent to the vault" in done.stderr
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as conn:
        written = conn.execute(
            "SELECT client, action, outcome FROM vault.audit_log WHERE id > %s"
            " AND client IN ('analyst', 'privacy-officer', 'etl-service')"
            " AND (action <> 'tokenize' OR outcome LIKE 'refused%%')",
            (before,),
        ).fetchall()
    assert written == []


def test_refusals_name_the_permission_and_the_certificate(cli_stack: CliStack) -> None:
    (token,) = tokenize(cli_stack, "ip", fresh_ip())
    cases = [
        ("analyst", ["erase", token, "--purpose", "X-1", "--yes"], "may not erase"),
        ("analyst", ["tokenize", "--type", "ip", "-"], "may not tokenize"),
        ("etl-service", ["reveal", token, "--purpose", "X-1"], "may not detokenize"),
        ("privacy-officer", ["reveal", token, "--purpose", "X-1"], "may not detokenize"),
    ]
    for role, args, says in cases:
        done = cli_stack.as_(role, *args, stdin="192.0.2.1\n")  # the value to tokenize
        assert done.returncode == 1, (role, args, done.stdout)
        assert "PERMISSION_DENIED" in done.stderr and says in done.stderr, done.stderr
        assert f"{role}.pem" in done.stderr  # which certificate was presented
        assert "192.0.2.1" not in done.stderr


def test_a_certificate_from_another_ca_is_told_to_check_its_files(cli_stack: CliStack, tmp_path: Path) -> None:
    # `make up` keeps no CA key, so nobody can mint a stack certificate; a name the policy does
    # not know is tested on the in-process vault (tests/integration/test_vault_client.py).
    other = certs.create_authority(tmp_path / "other-ca")
    pair = certs.issue(other, tmp_path, "analyst")
    done = cli_stack.run(
        "--stack", str(cli_stack.state_dir), "--as", "analyst", "--cert", str(pair.cert), "--key", str(pair.key),
        "--deadline", "5", "reveal", "ip_" + "A" * 22, "--purpose", "X-2",
    )  # fmt: skip
    assert done.returncode == 1
    assert "UNAVAILABLE" in done.stderr and "issued by the vault's CA" in done.stderr, done.stderr
    assert str(pair.cert) in done.stderr


def test_the_security_team_runs_key_and_audit_commands_and_nobody_else(cli_stack: CliStack) -> None:
    status = cli_stack.as_("security", "status")
    assert status.returncode == 0, status.stderr
    assert "fingerprints to re-index" in status.stdout and "KEK latest version" in status.stdout
    verified = cli_stack.as_("security", "audit", "verify")
    assert verified.returncode == 0 and "intact" in verified.stdout
    refused = cli_stack.as_("analyst", "status")  # asked of the vault, which runs it for the team's certificate only
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr, refused.stderr
    assert "client 'analyst' may not run the key job status" in refused.stderr
    reveals_nothing = cli_stack.as_("security", "reveal", "ip_" + "A" * 22, "--purpose", "X-3")
    assert reveals_nothing.returncode == 1 and "PERMISSION_DENIED" in reveals_nothing.stderr, reveals_nothing.stderr


def test_the_key_jobs_run_in_the_vault_for_the_security_team_certificate_only(cli_stack: CliStack) -> None:
    done = cli_stack.as_("security", "reencrypt", "--reason", "CHG-2026-11")
    assert done.returncode == 0 and "re-encrypted" in done.stdout, done.stderr
    for role in ("analyst", "etl-service"):
        refused = cli_stack.as_(role, "reencrypt", "--reason", "CHG-2026-12")
        assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr, refused.stderr
        assert f"client '{role}' may not run the key job reencrypt" in refused.stderr


def test_settings_from_the_environment_and_from_a_profile(cli_stack: CliStack, tmp_path: Path) -> None:
    (token,) = tokenize(cli_stack, "ip", fresh_ip())
    settings = {"TOKENVAULT_STACK": str(cli_stack.state_dir), "TOKENVAULT_AS": "analyst"}
    by_env = cli_stack.run("reveal", token, "--purpose", "CASE-104", env=settings)
    assert by_env.returncode == 0, by_env.stderr
    profiles = tmp_path / "profiles.toml"
    env = cli_stack.env
    profiles.write_text(
        f'[case-work]\naddress = "{env["TOKENVAULT_GRPC_ADDRESS"]}"\nca = "{env["TLS_CA_CERT"]}"\n'
        f'cert = "{env["ANALYST_TLS_CERT"]}"\nkey = "{env["ANALYST_TLS_KEY"]}"\nserver_name = "localhost"\n'
    )
    by_profile = cli_stack.run("--profile-file", str(profiles), "--profile", "case-work", "reveal", token, "-p", "C-5")
    assert by_profile.returncode == 0, by_profile.stderr
    assert by_env.stdout == by_profile.stdout and token in by_env.stdout


def test_missing_settings_say_how_to_provide_them(cli_stack: CliStack, tmp_path: Path) -> None:
    nothing = cli_stack.run("reveal", "ip_" + "A" * 22, "--purpose", "X-4", env={"HOME": str(tmp_path)})
    assert nothing.returncode == 2
    assert "TOKENVAULT_CERT" in nothing.stderr and "--stack .stack --as analyst" in nothing.stderr
    no_stack = cli_stack.run("--stack", str(tmp_path), "--as", "analyst", "reveal", "ip_" + "A" * 22, "-p", "X-4")
    assert no_stack.returncode == 2 and "make up" in no_stack.stderr
    no_role = cli_stack.run("--stack", str(cli_stack.state_dir), "reveal", "ip_" + "A" * 22, "-p", "X-4")
    assert no_role.returncode == 2 and "--as" in no_role.stderr


def test_the_security_team_sees_who_revealed_a_token(cli_stack: CliStack) -> None:
    watched, unseen = tokenize(cli_stack, "ip", fresh_ip(), fresh_ip())
    assert cli_stack.as_("analyst", "reveal", watched, "--purpose", "CASE-301").returncode == 0
    assert cli_stack.as_("fraud-investigator", "reveal", watched, unseen, "-p", "CASE-302").returncode == 0
    saw = cli_stack.as_("security", "audit", "who-saw", watched, "-p", "INC-301")
    assert saw.returncode == 0, saw.stderr
    assert "2 reveal(s) and 0 erasure(s) of this token" in saw.stdout
    assert "analyst" in saw.stdout and "CASE-301" in saw.stdout and "fraud-investigator" in saw.stdout
    nobody = cli_stack.as_("security", "audit", "who-saw", tokenize(cli_stack, "ip", fresh_ip())[0], "-p", "INC-302")
    assert nobody.returncode == 0 and "0 reveal(s) and 0 erasure(s) of this token" in nobody.stdout


def test_who_saw_cuts_no_cell_short_and_gives_its_rows_to_programs(cli_stack: CliStack) -> None:
    """On an 80-column terminal, a file or a pipe the table showed `2026-12-…`, `DEMO-MA…`: the when, the who and the
    why an access request asks for (walk, 6 Dec); `-o json` gives the rows alone, the verdict on stderr.

    Folded instead, its 7 columns read "detokeniz / e" and the certificate serial in 5 pieces at 80 columns (W46-11):
    there each row is a block of its fields, one a line, every value whole on its line.
    """
    watched = tokenize(cli_stack, "ip", fresh_ip())[0]
    purpose = "CASE-2026-0417-FOLLOWUP"
    assert cli_stack.as_("analyst", "reveal", watched, "--purpose", purpose).returncode == 0
    asked = ("--stack", str(cli_stack.state_dir), "--as", "security", "audit", "who-saw", watched, "-p", "INC-304")
    as_json = cli_stack.run(*asked, "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    (row,) = (r for r in json.loads(as_json.stdout) if r["action"] == "detokenize")
    assert (row["client"], row["purpose"]) == ("analyst", purpose), row
    assert row["outcome"].startswith("ok: 1 revealed, 0 refused; fetch saw records up to "), row  # A43-1
    assert len(row["client_serial"]) >= 32 and row["at"].startswith("20") and row["at"].endswith("+00:00"), row
    assert "1 reveal(s) and 0 erasure(s) of this token" in as_json.stderr
    narrow = cli_stack.run(*asked, env={"COLUMNS": "80"})
    assert narrow.returncode == 0, narrow.stderr
    assert "…" not in narrow.stdout, narrow.stdout  # never cut
    lines = narrow.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, narrow.stdout
    for field, value in (("action", "detokenize"), ("client", "analyst"), ("purpose", purpose)):
        assert any(line.split() == [field, value] for line in lines), (field, narrow.stdout)
    assert any(line.split() == ["certificate", "serial", row["client_serial"]] for line in lines), narrow.stdout
    when = [line.split() for line in lines if line.startswith("when")]
    assert ["when", "(UTC)", row["at"]] in when, (row["at"], when)


def test_a_reader_that_goes_away_ends_the_command_quietly(cli_stack: CliStack) -> None:
    """`tokenvault reveal --query … | head` ended with `tokenvault: [Errno 32] Broken pipe`, exit 2 (walk, 6 Dec)."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written, as `head` is once it has its lines
    try:
        done = subprocess.run(
            [
                *(str(TOKENVAULT), "--stack", str(cli_stack.state_dir), "--as", "analyst", "reveal", "-p", "CASE-305"),
                *("-o", "csv", "--query", "SELECT user_id FROM user_logins"),  # rows of no token: no vault call
            ],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert done.returncode == 1 and "Broken pipe" not in done.stderr and "Errno" not in done.stderr, done.stderr


def test_the_audit_reports_are_made_by_the_vault_for_the_certificates_the_policy_gives_them(
    cli_stack: CliStack,
) -> None:
    # They ran in the caller's process with the vault service's own database role and Vault login;
    # now the vault makes them, and the caller presents only its certificate.
    watched = tokenize(cli_stack, "ip", fresh_ip())[0]
    for role in ("analyst", "etl-service"):
        refused = cli_stack.as_(role, "audit", "verify")
        assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr, refused.stderr
        assert f"client '{role}' may not ask for the audit report verify" in refused.stderr
    officer = cli_stack.as_("privacy-officer", "audit", "who-saw", watched, "--purpose", "DSAR-2026-0042")
    assert officer.returncode == 0 and "0 reveal(s) and 0 erasure(s) of this token" in officer.stdout, officer.stderr
    # --exported FILE is read here and sent (the vault reads no file a caller names): a copy that holds no
    # checkpoint is refused, the stack's own copy verified against.
    named = cli_stack.as_("security", "audit", "verify", "--exported", "/etc/passwd")
    assert named.returncode == 1 and "the exported checkpoint copy sent was refused" in named.stderr, named.stderr
    own = cli_stack.as_(
        "security", "audit", "verify", "--exported", str(cli_stack.state_dir / "audit" / "checkpoints.jsonl")
    )
    assert own.returncode == 0 and "read from the-copy-sent-with-the-call" in own.stdout, own.stdout + own.stderr
    asked = cli_stack.as_("privacy-officer", "audit", "who-saw", watched, "-p", "DSAR-1", "--exported", "/etc/passwd")
    assert asked.returncode == 2 and "audit verify --exported FILE" in asked.stderr


def test_the_security_commands_hint_at_the_service_settings_only_when_those_are_missing(cli_stack: CliStack) -> None:
    # Every exit 2 of an admin command was followed by "run them where the service runs ...": a
    # who-saw argument that is no token (or a --metrics-port already taken, before reencrypt moved into the vault) sent
    # looking for settings that were there (documentation walk, 4 December).
    hint = "run them where the service runs"
    not_a_token = cli_stack.as_("security", "audit", "who-saw", "notatoken", "-p", "INC-303")
    assert not_a_token.returncode == 2 and "is not a token" in not_a_token.stderr, not_a_token.stderr
    assert hint not in not_a_token.stderr and "reveal(s)" not in not_a_token.stdout
    # Neither --stack nor a certificate: the key and audit commands ask the vault now, which needs a certificate.
    for command in (("status",), ("audit", "verify")):
        outside = cli_stack.run(*command)
        assert outside.returncode == 2 and "TOKENVAULT_CERT" in outside.stderr, outside.stderr
        assert hint not in outside.stderr
    no_certificate = cli_stack.run("rewrap", "--reason", "CHG-2026-13")
    assert no_certificate.returncode == 2 and "--stack .stack --as security" in no_certificate.stderr
