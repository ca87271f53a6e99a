"""The short key commands run by the vault service for the security team's certificate (KeyJobs' unary calls).

Real OpenBao and Postgres, one vault on a database and a KEK of its own for the module (retiring
KEK versions must not touch the session's KEK). `status`, `rewrap`, `rotate-encryption-key`,
`rotate-fingerprint-key` and `retire-kek-versions` used to run in the operator's process with the
vault service's own Vault login and database role (DESIGN §1b: the security team cannot decrypt).
Here the team's certificate has the running vault do them; their intent and outcome rows name the
certificate (CN, serial, SHA-256); the analyst's and the ETL's certificates are refused
PERMISSION_DENIED, audited, nothing changed. `retire-kek-versions` writes Transit with the
operator's own Vault token sent with the call: a token without tokenvault-security is refused,
the rows name the certificate and the Vault identity, and the token is in no audit row, log
line or answer.
"""

from __future__ import annotations

import base64
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import grpc
import hvac
import psycopg
import pytest

from devstack import certs
from tests.conftest import RunningVault, running_vault, stack_identity, vault_clients, vault_config
from tests.integration.audit_rows import client_certificate, ticket_rows
from tests.integration.own_database import database_of_its_own
from tests.integration.test_erasure_crypto_shredding import _security_team
from tokenvault_client import ClientIdentity, KeyCommands, PermissionDenied, RateLimited, VaultClient, VaultClientError
from vault_service.service.ports import INTENT_HELD

SECURITY_TEAM = "security-team"
CHANGES = ("rewrap", "rotate-encryption-key", "rotate-fingerprint-key")


@pytest.fixture(scope="module")
def own_kek(stack_env: dict[str, str]) -> tuple[str, hvac.Client]:
    """A KEK of the module's own (the session's stays as it is), and the root client."""
    root = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    name = f"tokenvault-cmds-{uuid.uuid4().hex[:8]}"
    root.secrets.transit.create_key(name=name)
    return name, root


@pytest.fixture(scope="module")
def own_env(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    checkpoints = tmp_path_factory.mktemp("key-commands") / "checkpoints.jsonl"
    with database_of_its_own(stack_env, "keycmds", migrated=True, checkpoint_file=checkpoints) as env:
        yield env


TEAM_COMMANDS = (
    "key_commands_per_second = 0.5\nkey_commands_burst = 20\n"
    "key_status_per_second = 1\nkey_status_burst = 30\n"
    "key_token_refusals_per_second = 0.5\nkey_token_refusals_burst = 30\n"
)
"""The security team's key-command budgets in the shipped policy (config/vault-policy.toml): changes, status,
Vault tokens Vault refused."""
GENEROUS = (
    "key_commands_per_second = 100\nkey_commands_burst = 1000\n"
    "key_status_per_second = 100\nkey_status_burst = 1000\n"
    "key_token_refusals_per_second = 100\nkey_token_refusals_burst = 1000\n"
)


def _own_settings(kek: str, root: hvac.Client) -> dict[str, str]:
    return {
        "TOKENVAULT_KEK_NAME": kek,
        "TOKENVAULT_VAULT_ROLE_ID": "",  # the root token: the service's policy names the session's KEK only
        "TOKENVAULT_VAULT_TOKEN": str(root.token),
        "TOKENVAULT_KEY_CHECK_SECONDS": "3600",  # no rewrap of its own while a test holds keys under an old version
    }


@pytest.fixture(scope="module")
def own_vault(
    own_env: dict[str, str], own_kek: tuple[str, hvac.Client], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningVault]:
    # The stack's policy, the security team given key commands enough for this module (the metering test
    # below starts a vault of its own with the shipped budget).
    kek, root = own_kek
    policy = tmp_path_factory.mktemp("key-commands-policy") / "vault-policy.toml"
    shipped = vault_config(own_env).policy_file.read_text()
    assert TEAM_COMMANDS in shipped
    policy.write_text(shipped.replace(TEAM_COMMANDS, GENEROUS))
    with running_vault(own_env, TOKENVAULT_POLICY_FILE=str(policy), **_own_settings(kek, root)) as running:
        yield running


@pytest.fixture
def commands_of(own_vault: RunningVault, own_env: dict[str, str]) -> Iterator[Callable[[str], KeyCommands]]:
    with vault_clients(own_env, own_vault.address) as make:
        yield lambda name: make(name).key_commands()


def _refusals(env: dict[str, str], client: str, action: str, outcome: str) -> int:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT count(*) FROM vault.audit_log WHERE client = %s AND action = %s AND outcome = %s",
            (client, action, outcome),
        ).fetchone()
    return int(row[0]) if row else 0


def _keys(env: dict[str, str]) -> list[tuple[int, str, str]]:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute("SELECT id, purpose, state FROM vault.data_keys ORDER BY id").fetchall()
    return [(int(a), str(b), str(c)) for a, b, c in rows]


def _kek_settings(root: hvac.Client, kek: str) -> tuple[int, int, int]:
    data = root.secrets.transit.read_key(name=kek)["data"]
    return int(data["latest_version"]), int(data["min_decryption_version"]), int(data["min_encryption_version"])


def _change(commands: KeyCommands, change: str, reason: str) -> int:
    if change == "rewrap":
        return commands.rewrap(reason)
    if change == "rotate-encryption-key":
        return commands.rotate_encryption_key(reason)
    return commands.rotate_fingerprint_key(reason)


def test_the_security_team_certificate_has_the_vault_rotate_rewrap_and_report(
    own_env: dict[str, str],
    own_vault: RunningVault,
    own_kek: tuple[str, hvac.Client],
    commands_of: Callable[[str], KeyCommands],
) -> None:
    kek, root = own_kek
    team = commands_of(SECURITY_TEAM)
    before = team.status()
    assert before.kek_latest_version == _kek_settings(root, kek)[0]
    assert {k.key_id for k in before.keys} == {k for k, _, _ in _keys(own_env)}

    dek = team.rotate_encryption_key("CHG-8101")
    pending = team.rotate_fingerprint_key("CHG-8102")
    root.secrets.transit.rotate_key(name=kek)
    rewrapped = team.rewrap("CHG-8103")

    after = team.status()
    states = {k.key_id: (k.purpose, k.state) for k in after.keys}
    assert states[dek] == ("encryption", "active") and states[pending] == ("fingerprint", "pending")
    assert rewrapped >= 3 and after.kek_latest_version == before.kek_latest_version + 1
    assert {k.kek_version for k in after.keys if k.state != "retired"} == {after.kek_latest_version}
    assert after.safe_min_decryption_version == after.kek_latest_version
    serial, digest = client_certificate(own_env, SECURITY_TEAM)
    for action, reason, outcome in (
        ("rotate-encryption-key", "CHG-8101", f"ok: data key {dek} active"),
        ("rotate-fingerprint-key", "CHG-8102", f"ok: fingerprint key {pending} pending"),
        ("rewrap", "CHG-8103", f"ok: {rewrapped} data keys rewrapped"),
    ):
        rows = ticket_rows(own_env, action, reason)
        assert [row[:3] for row in rows] == [(SECURITY_TEAM, serial, digest)] * 2
        assert rows[0][3] == INTENT_HELD and rows[1][3].startswith(f"{outcome} (intent row ")  # it names its intent

    with pytest.raises(VaultClientError) as under_way:  # a rotation under way: finish it first
        team.rotate_fingerprint_key("CHG-8104")
    assert under_way.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "run the re-index to finish it" in under_way.value.details
    assert ticket_rows(own_env, "rotate-fingerprint-key", "CHG-8104")[-1][3].startswith("refused: ")


@pytest.mark.parametrize("client", ["analyst", "etl-service"])
def test_other_certificates_are_refused_every_key_command_on_the_record_and_nothing_changes(
    own_env: dict[str, str],
    own_vault: RunningVault,
    own_kek: tuple[str, hvac.Client],
    commands_of: Callable[[str], KeyCommands],
    client: str,
) -> None:
    kek, root = own_kek
    commands = commands_of(client)
    keys, settings = _keys(own_env), _kek_settings(root, kek)
    security = _security_team(root, kek).token
    calls: dict[str, Callable[[], object]] = {
        "status": commands.status,
        **{change: partial(_change, commands, change, "CHG-8201") for change in CHANGES},
        "retire-kek-versions": partial(commands.retire_kek_versions, settings[0], "CHG-8201", str(security)),
    }
    for name, call in calls.items():
        before = _refusals(own_env, client, name, "refused: PermissionDenied")
        with pytest.raises(PermissionDenied) as refused:
            call()
        assert f"client {client!r} may not run the key job {name}" in refused.value.details
        assert "security team's client certificate" in refused.value.details
        assert _refusals(own_env, client, name, "refused: PermissionDenied") == before + 1  # audited
    assert _keys(own_env) == keys and _kek_settings(root, kek) == settings
    assert ticket_rows(own_env, "rewrap", "CHG-8201") == []


def test_a_reason_the_log_may_not_keep_is_refused_before_anything_and_on_the_record(
    own_env: dict[str, str], own_vault: RunningVault, commands_of: Callable[[str], KeyCommands]
) -> None:
    team = commands_of(SECURITY_TEAM)
    keys = _keys(own_env)
    for change in CHANGES:
        before = _refusals(own_env, SECURITY_TEAM, change, "refused: InvalidRequest")
        with pytest.raises(VaultClientError) as refused:
            _change(team, change, "user 10.0.0.1 asked")
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "reason refused" in refused.value.details
        assert "10.0.0.1" not in refused.value.details
        assert _refusals(own_env, SECURITY_TEAM, change, "refused: InvalidRequest") == before + 1
    assert _keys(own_env) == keys


def test_retiring_kek_versions_writes_transit_with_the_operators_token_only_after_the_checks(
    own_env: dict[str, str],
    own_vault: RunningVault,
    own_kek: tuple[str, hvac.Client],
    commands_of: Callable[[str], KeyCommands],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    kek, root = own_kek
    team = commands_of(SECURITY_TEAM)
    # Named tokenvault-security (what the vault asks of a token) with the rights of the shipped policy on this KEK.
    scoped = _security_team(root, kek)
    grant = root.auth.token.create(policies=["tokenvault-security", f"security-{kek}"], ttl="10m")["auth"]
    operator, accessor = str(grant["client_token"]), str(grant["accessor"])
    dlq = str(root.auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"])
    no_config = str(root.auth.token.create(policies=["tokenvault-security"], ttl="10m")["auth"]["client_token"])
    assert scoped.token
    root.secrets.transit.rotate_key(name=kek)  # the data keys are under the older version now
    latest, min_decryption, _ = _kek_settings(root, kek)
    errors: list[str] = []

    def refused(code: grpc.StatusCode, below: int, token: str, reason: str = "CHG-8301") -> str:
        with pytest.raises(VaultClientError) as refusal:
            team.retire_kek_versions(below, reason, token)
        assert refusal.value.code == code, refusal.value
        errors.append(str(refusal.value))
        return refusal.value.details

    assert "none of the policies tokenvault-security" in refused(grpc.StatusCode.PERMISSION_DENIED, latest, dlq)
    assert "does not accept this token" in refused(grpc.StatusCode.PERMISSION_DENIED, latest, "hvs.not-a-token")
    assert "from 1 up" in refused(grpc.StatusCode.INVALID_ARGUMENT, 0, operator)
    assert "your own Vault token" in refused(grpc.StatusCode.INVALID_ARGUMENT, latest, "")
    assert f"still wrapped under KEK versions below v{latest}" in refused(
        grpc.StatusCode.FAILED_PRECONDITION, latest, operator
    )
    assert f"has no version {latest + 1}" in refused(grpc.StatusCode.FAILED_PRECONDITION, latest + 1, operator)
    assert _kek_settings(root, kek) == (latest, min_decryption, 0)  # nothing written in Transit
    assert _refusals(own_env, SECURITY_TEAM, "retire-kek-versions", "refused: PermissionDenied") >= 2

    team.rewrap("CHG-8302")
    denied = refused(grpc.StatusCode.PERMISSION_DENIED, latest, no_config)  # Vault refuses its config write
    assert "Vault refused to" in denied and "with your token (permission denied)" in denied
    assert _kek_settings(root, kek) == (latest, min_decryption, 0)
    retired = team.retire_kek_versions(latest, "CHG-8303", operator)
    assert (retired.kek_name, retired.below) == (kek, latest)
    assert _kek_settings(root, kek) == (latest, latest, latest)
    assert team.status().kek_min_decryption_version == latest

    serial, digest = client_certificate(own_env, SECURITY_TEAM)
    rows = ticket_rows(own_env, "retire-kek-versions", "CHG-8303")
    assert [(s, d) for _, s, d, _ in rows] == [(serial, digest)] * 2
    assert all(c.startswith(f"{SECURITY_TEAM} with vault:") and f"accessor={accessor}" in c for c, _, _, _ in rows)
    assert rows[0][3] == INTENT_HELD and rows[1][3].startswith(f"ok: KEK {kek} versions below v{latest} retired")
    with psycopg.connect(own_env["PG_ADMIN_DSN"]) as conn:
        audit_text = conn.execute("SELECT string_agg(t::text, ' ') FROM vault.audit_log t").fetchone()
    for token in (operator, dlq, no_config, "hvs.not-a-token"):  # never recorded, logged or echoed
        assert audit_text is not None and token not in str(audit_text[0])
        assert token not in caplog.text
        assert not any(token in error for error in errors)


def _vault_address_named(env: dict[str, str], text: str) -> bool:
    """Whether `text` names the vault's OpenBao: its URL, or its host:port."""
    address = env["VAULT_ADDR"]
    return address in text or address.split("://", 1)[-1] in text


def test_a_token_that_is_no_vault_token_is_refused_invalid_argument_on_the_record_and_never_echoed(
    own_env: dict[str, str],
    own_vault: RunningVault,
    own_kek: tuple[str, hvac.Client],
    commands_of: Callable[[str], KeyCommands],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Attack 28, F2: a non-Latin-1 token answered UNKNOWN, CR/LF or a space UNAVAILABLE "cannot reach Vault
    at http://...": unaudited, the vault's OpenBao address quoted. Now refused as what it is, on the record."""
    caplog.set_level(logging.DEBUG)
    kek, root = own_kek
    team = commands_of(SECURITY_TEAM)
    settings = _kek_settings(root, kek)
    malformed = {
        "non-latin-1": "hvs.FAKE\u4e00tail",
        "header injection": "hvs.FAKE\r\nX-Injected: 1",
        "a space": "s.CAESI abcdef",
        "a line end": "s.CAESIabcdef\n",
        "NUL": "abc\x00def",
        "megabytes": "s." + "A" * 3_000_000,
    }
    for what, token in malformed.items():
        before = _refusals(own_env, SECURITY_TEAM, "retire-kek-versions", "refused: InvalidRequest")
        with pytest.raises(VaultClientError) as refused:
            team.retire_kek_versions(settings[0], "CHG-8401", token)
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT, (what, refused.value)
        details = refused.value.details
        assert "the Vault token sent is not one" in details and "bao login" in details, (what, details)
        assert token.strip() not in details and not _vault_address_named(own_env, details), (what, details)
        assert _refusals(own_env, SECURITY_TEAM, "retire-kek-versions", "refused: InvalidRequest") == before + 1, what
    assert "at most 4096 characters, not 3000002" in details
    assert _kek_settings(root, kek) == settings and ticket_rows(own_env, "retire-kek-versions", "CHG-8401") == []
    # A well-formed token Vault does not know: refused by Vault, and the answer does not name Vault's address.
    with pytest.raises(PermissionDenied) as unknown:
        team.retire_kek_versions(settings[0], "CHG-8401", "s.NotATokenVaultKnows0123")
    assert "does not accept this token" in unknown.value.details
    assert not _vault_address_named(own_env, unknown.value.details), unknown.value.details
    for token in malformed.values():
        assert token.strip() not in caplog.text


def test_status_reads_without_a_key_job_session_and_still_refuses_a_wrapped_key_that_does_not_unwrap(
    own_env: dict[str, str], own_vault: RunningVault, commands_of: Callable[[str], KeyCommands]
) -> None:
    """Attack 28, F7: each Status opened a key job's session (its own pool, two connections) and had Transit
    unwrap every data key. Now it reads on the serving wiring: at most the one short connection that asks for
    interrupted jobs; a wrapped key replaced in the table (a faked rewrap) is still unwrapped, and refused."""
    team = commands_of(SECURITY_TEAM)
    team.status()  # every loaded key unwrapped and matched once

    def sessions() -> int:
        with psycopg.connect(own_env["PG_ADMIN_DSN"]) as conn:
            row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()
        return int(row[0]) if row else 0

    calls = 10
    opened = sessions()
    for _ in range(calls):
        team.status()
    opened = sessions() - opened - 1  # less the connection that read the count
    # One per call at most, and a few the vault opens meanwhile on its own (its pool growing, the upkeep's probe
    # connection under load: 11 once on a loaded machine): the old code opened 2 a call, 20 here.
    assert opened <= calls + 3, f"{opened} database sessions opened for {calls} status calls"

    with psycopg.connect(own_env["PG_VAULT_DSN"], autocommit=True) as conn:  # the serving role's column grant
        key_id, wrapped = conn.execute(
            "SELECT id, wrapped_key FROM vault.data_keys WHERE purpose = 'encryption' AND state = 'active'"
        ).fetchone() or (0, "")
        newer = int(str(wrapped).split(":")[1].removeprefix("v")) + 1  # what a rewrap writes (0037 allows no other)
        conn.execute(
            "UPDATE vault.data_keys SET wrapped_key = %s WHERE id = %s",
            (f"vault:v{newer}:" + base64.b64encode(secrets.token_bytes(60)).decode(), key_id),
        )
    try:
        with pytest.raises(VaultClientError) as refused:
            team.status()
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE and "unwrap" in refused.value.details
        assert _refusals(own_env, SECURITY_TEAM, "status", "refused: KeysUnavailable") >= 1
    finally:
        with psycopg.connect(own_env["PG_ADMIN_DSN"]) as conn:  # the owner restores it (its triggers aside)
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute("UPDATE vault.data_keys SET wrapped_key = %s WHERE id = %s", (wrapped, key_id))
    assert {k.key_id for k in team.status().keys} == {k for k, _, _ in _keys(own_env)}


def test_status_has_a_budget_of_its_own_per_certificate_and_a_status_flood_never_refuses_a_change(
    own_env: dict[str, str], own_kek: tuple[str, hvac.Client], tmp_path: Path
) -> None:
    """Attack 28, F7 metered status; review 33, R33-4: status and the changes shared one bucket per CN (20 at once,
    then one every 2 s), so 21 status calls refused the team's next rewrap. Now, the shipped budgets: 30 status
    calls served and audited, the 31st refused; a rewrap still served; another certificate of the team (its own
    serial) still answered; the changes still refused past their own bound (20, then one every 2 s)."""
    kek, root = own_kek
    serial, digest = client_certificate(own_env, SECURITY_TEAM)
    authority = certs.load_authority(Path(own_env["STACK_DIR"]) / "certs")
    other = certs.issue(authority, tmp_path, SECURITY_TEAM)  # a second certificate of the team: another serial
    with (
        running_vault(own_env, **_own_settings(kek, root)) as vault,  # a process of its own: budgets of its own
        VaultClient.connect(vault.address, stack_identity(own_env, SECURITY_TEAM)) as client,
        VaultClient.connect(
            vault.address, ClientIdentity(authority.cert_path, other.cert, other.key, "localhost")
        ) as second,
    ):
        team = client.key_commands()
        before = _status_rows(own_env)
        status_start = time.monotonic()
        for _ in range(30):
            team.status()
        rows = _status_rows(own_env)[len(before) :]
        assert len(rows) == 30 and all(row[:3] == (SECURITY_TEAM, serial, digest) for row in rows), rows
        assert all(row[3].startswith("ok: ") and " data keys " in row[3] for row in rows), rows
        refused_before = _refusals(own_env, SECURITY_TEAM, "status", "refused: RateLimited")
        status_served = 30
        with pytest.raises(RateLimited) as over:  # the budget refills one a second meanwhile (a loaded machine)
            for _ in range(30):
                team.status()
                status_served += 1
        status_bound = 30 + (time.monotonic() - status_start) * 1 + 1
        assert 30 <= status_served <= status_bound, (status_served, status_bound)
        assert over.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and 0 < over.value.retry_after <= 1
        assert "30 status call(s)" in over.value.details and "key_status_per_second" in over.value.details
        assert f"serial {serial}" in over.value.details
        assert _refusals(own_env, SECURITY_TEAM, "status", "refused: RateLimited") == refused_before + 1

        assert team.rewrap("CHG-8501") >= 0  # served: the changes' budget is untouched by the status calls
        assert ticket_rows(own_env, "rewrap", "CHG-8501")[-1][3].startswith("ok: ")
        assert second.key_commands().status().keys  # per certificate: the other serial's budget is its own

        start, served = time.monotonic(), 1
        with pytest.raises(RateLimited) as changes_over:
            for _ in range(40):
                team.rewrap("CHG-8502")
                served += 1
        bound = 20 + (time.monotonic() - start) * 0.5 + 1
        assert 20 <= served <= bound, (served, bound)
        assert changes_over.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "20 key change(s)" in changes_over.value.details
        assert "key_commands_per_second" in changes_over.value.details
        assert _refusals(own_env, SECURITY_TEAM, "rewrap", "refused: RateLimited") >= 1
        time.sleep(over.value.retry_after + 0.1)
        assert team.status().keys  # status refilled on its own


def test_well_formed_bogus_tokens_spend_only_a_budget_of_their_own_and_a_real_retire_is_still_served(
    own_env: dict[str, str], own_kek: tuple[str, hvac.Client]
) -> None:
    """Review 33, R33-4: retire-kek-versions was charged before Vault looked the token up, so 20 well-formed bogus
    tokens (`s.x`) spent the changes' budget and refused the team's real retire. Now the changes' budget is spent
    once Vault accepted the token; refused tokens spend a budget of their own (30, then one every 2 s), past which
    no token is looked up: RESOURCE_EXHAUSTED, on the record."""
    kek, root = own_kek
    _security_team(root, kek)  # the policy security-<kek> (the shipped rights on this KEK)
    grant = root.auth.token.create(policies=["tokenvault-security", f"security-{kek}"], ttl="10m")["auth"]
    operator = str(grant["client_token"])
    root.secrets.transit.rotate_key(name=kek)  # a version to retire
    with (
        running_vault(own_env, **_own_settings(kek, root)) as vault,
        VaultClient.connect(vault.address, stack_identity(own_env, SECURITY_TEAM)) as client,
    ):
        team = client.key_commands()
        latest = _kek_settings(root, kek)[0]
        denied_before = _refusals(own_env, SECURITY_TEAM, "retire-kek-versions", "refused: PermissionDenied")
        bogus = 25  # more than the changes' burst (20)
        for i in range(bogus):
            with pytest.raises(PermissionDenied) as refused:
                team.retire_kek_versions(latest, "CHG-8601", f"s.NotATokenVaultKnows{i:04d}")
            assert "does not accept this token" in refused.value.details
        denied = _refusals(own_env, SECURITY_TEAM, "retire-kek-versions", "refused: PermissionDenied")
        assert denied == denied_before + bogus

        team.rewrap("CHG-8602")  # every data key under the KEK's newest version
        retired = team.retire_kek_versions(latest, "CHG-8603", operator)
        assert (retired.kek_name, retired.below) == (kek, latest)
        assert ticket_rows(own_env, "retire-kek-versions", "CHG-8603")[-1][3].startswith("ok: ")

        start, looked_up = time.monotonic(), bogus
        limited_before = _refusals(own_env, SECURITY_TEAM, "retire-kek-versions", "refused: RateLimited")
        with pytest.raises(RateLimited) as over:
            for i in range(40):
                with pytest.raises(PermissionDenied):
                    team.retire_kek_versions(latest, "CHG-8604", f"s.NotATokenVaultKnowsEither{i:04d}")
                looked_up += 1
        assert 30 <= looked_up <= 30 + (time.monotonic() - start) * 0.5 + 1, looked_up
        assert over.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "key_token_refusals_per_second" in over.value.details
        assert _refusals(own_env, SECURITY_TEAM, "retire-kek-versions", "refused: RateLimited") == limited_before + 1
        assert _refusals(own_env, SECURITY_TEAM, "retire-kek-versions", "refused: PermissionDenied") == (
            denied_before + looked_up
        )


def _status_rows(env: dict[str, str]) -> list[tuple[str, str, str, str]]:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT client, client_serial, client_cert_sha256, outcome FROM vault.audit_log"
            " WHERE action = 'status' AND outcome LIKE 'ok: %' ORDER BY id"
        ).fetchall()
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]
