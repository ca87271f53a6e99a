"""Audit rows only the database writes are refused to the serving role (review 23, R23-2; migration 0031).

The serving role (`tokenvault_vault`) may INSERT into vault.audit_log, to append the service's own
rows. It appended a `data-key-insert` row naming an invented key 999 with the active audit key's
check value: the chain linked it, and from then on `audit verify` failed ("data keys 3 and 999
are one key") and who-saw refused, for good. Here, against real PostgreSQL and OpenBao: every row
of an action the database writes itself (data-key-*, issue, reseal, compact, an erase row that
names tokens or claims erasures) is refused to the serving role, by a plain INSERT and through
functions and triggers of its own in pg_temp; nothing is written and the log still verifies; the
database's own paths (key rotation, re-encryption, re-index, compaction, erasure) still write them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import grpc
import psycopg
import pytest

from tests.conftest import RunningVault, running_vault
from tests.integration.audit_attacks import analyst_reveal, erase, tokenize_fresh_ip
from tests.integration.own_database import database_of_its_own
from vault_service.service.audit_verify import who_saw
from vault_service.service.revealing import reveal_hash

REFUSED = "only the database itself writes it; nothing was written"


class Vault(NamedTuple):
    """A vault on a database of its own, with a token one analyst saw."""

    env: dict[str, str]
    vault: RunningVault
    seen: str


@pytest.fixture(scope="module")
def own(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    checkpoints = tmp_path_factory.mktemp("database_rows") / "checkpoints.jsonl"
    with (
        database_of_its_own(stack_env, "database_rows", checkpoint_file=checkpoints, migrated=True) as env,
        running_vault(env) as vault,
    ):
        seen = tokenize_fresh_ip(env, vault)
        assert analyst_reveal(env, vault, seen, "INC-2026-3101") == grpc.StatusCode.OK
        yield Vault(env, vault, seen)


def _admin(env: dict[str, str], query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
        return admin.execute(query, params).fetchall()


def _audit_key(own: Vault) -> tuple[int, str]:
    """The active audit key's id and check value (hex), as the chain names them."""
    ((key_id, check),) = _admin(
        own.env,
        "SELECT id, encode(check_value, 'hex') FROM vault.data_keys WHERE purpose = 'audit' AND state = 'active'",
    )
    return key_id, check


def _assert_still_verified(own: Vault) -> None:
    """audit verify intact, and who-saw answers (it refuses for good on a poisoned chain)."""
    report = own.vault.wired.verify_audit_fully(None)
    assert report.keys_problem is None and report.intact, (report.finding, report.keys_problem)
    assert len(who_saw(report, own.vault.wired.keys.ring.audit_keys, own.seen)) == 1


def _forged(own: Vault, case: str) -> tuple[str, str, list[bytes] | None]:
    key_id, check = _audit_key(own)
    named = [reveal_hash(own.vault.wired.keys.ring.audit_key, own.seen)]
    return {
        "data-key-insert-one-key-under-two-ids": ("data-key-insert", f"ok: 999 audit active check {check}", None),
        "data-key-update-another-check-value": ("data-key-update", f"ok: {key_id} audit active check {'0' * 64}", None),
        "data-key-other": ("data-key-delete", f"ok: {key_id} audit retired", None),
        "issue": ("issue", "ok: 9999 tokens issued", None),
        "reseal": ("reseal", "ok: 9999 re-sealed", None),
        "compact": ("compact", "ok: 9999 fingerprints moved to key 2", None),
        "erase-claiming-erasures": ("erase", "ok: 9999 erased, 0 not erased", None),
        "erase-naming-a-token": ("erase", "ok: 0 erased", named),
    }[case]


_INSERT = (
    "INSERT INTO vault.audit_log (client, action, item_count, outcome, revealed)"
    " VALUES ('tokenvault_vault (tokenvault-vault)', %s, 1, %s, %s::bytea[])"
)


def _written(own: Vault, action: str, outcome: str, revealed: list[bytes] | None = None) -> int:
    ((count,),) = _admin(
        own.env,
        "SELECT count(*) FROM vault.audit_log WHERE action = %s AND outcome = %s"
        " AND revealed IS NOT DISTINCT FROM %s::bytea[]",
        (action, outcome, revealed),
    )
    return int(count)


@pytest.mark.parametrize(
    "case",
    [
        "data-key-insert-one-key-under-two-ids",
        "data-key-update-another-check-value",
        "data-key-other",
        "issue",
        "reseal",
        "compact",
        "erase-claiming-erasures",
        "erase-naming-a-token",
    ],
)
def test_the_serving_role_cannot_insert_a_row_the_database_writes(own: Vault, case: str) -> None:
    action, outcome, revealed = _forged(own, case)
    with (
        psycopg.connect(own.env["PG_VAULT_DSN"], application_name="tokenvault-vault") as serving_role,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match=f'action "{action}": {REFUSED}'),
    ):
        serving_role.execute(_INSERT, (action, outcome, revealed))
    assert _written(own, action, outcome, revealed) == 0
    _assert_still_verified(own)


_FORGE = (
    "INSERT INTO vault.audit_log (client, action, item_count, outcome) VALUES ('x', 'data-key-insert', 1, '{outcome}');"
)
_TEMP_FUNCTION = [
    "CREATE FUNCTION pg_temp.forge() RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN " + _FORGE + " END $$",
    "SELECT pg_temp.forge()",
]
_TEMP_TRIGGER = [
    "CREATE TEMP TABLE bait (n int)",
    "CREATE FUNCTION pg_temp.forge() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN "
    + _FORGE
    + " RETURN NULL; END $$",
    "CREATE TRIGGER forge AFTER INSERT ON bait FOR EACH ROW EXECUTE FUNCTION pg_temp.forge()",
    "INSERT INTO bait VALUES (1)",
]


@pytest.mark.parametrize("trick", [_TEMP_FUNCTION, _TEMP_TRIGGER], ids=["pg_temp-function", "pg_temp-trigger"])
def test_a_function_or_trigger_of_its_own_does_not_write_it_either(own: Vault, trick: list[str]) -> None:
    """A database created from a template has TEMPORARY for PUBLIC again: the refusal does not rest on it."""
    _, check = _audit_key(own)
    outcome = f"ok: 998 audit active check {check}"
    with (
        psycopg.connect(own.env["PG_VAULT_DSN"]) as serving_role,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match=REFUSED),
    ):
        for statement in trick:
            serving_role.execute(statement.format(outcome=outcome))
    assert _written(own, "data-key-insert", outcome) == 0
    _assert_still_verified(own)


def test_the_service_still_writes_its_own_erase_rows(own: Vault) -> None:
    """A refused erasure, and one with no erasable token: rows that erased nothing, written by the service."""
    with psycopg.connect(own.env["PG_VAULT_DSN"]) as serving_role:
        for outcome in ("refused: PermissionDenied", "ok: 0 erased"):
            serving_role.execute(_INSERT, ("erase", outcome, None))
    assert _written(own, "erase", "refused: PermissionDenied") >= 1 and _written(own, "erase", "ok: 0 erased") >= 1
    _assert_still_verified(own)


def test_the_database_still_writes_them_on_the_legitimate_paths(own: Vault) -> None:
    (newest,) = _admin(own.env, "SELECT max(id) FROM vault.audit_log")[0]
    rotation = own.vault.wired.rotation("admin:test")
    erased = tokenize_fresh_ip(own.env, own.vault)  # issue
    rotation.rotate_encryption_key("CHG-2026-3101")  # data-key-update, data-key-insert
    assert rotation.reencrypt("CHG-2026-3101") >= 1  # reseal
    rotation.rotate_fingerprint_key("CHG-2026-3102")
    assert rotation.reindex("CHG-2026-3102") >= 1  # reindex, compact
    assert erase(own.env, own.vault, [erased], "GDPR-2026-3101") == [None]
    written = _admin(
        own.env,
        "SELECT action, client FROM vault.audit_log WHERE id > %s AND action <> ALL(%s)",
        (newest, ["tokenize", "detokenize"]),
    )
    actions = {action for action, _ in written}
    assert {"issue", "data-key-insert", "data-key-update", "reseal", "reindex", "compact", "erase"} <= actions
    assert {client for action, client in written if action.startswith("data-key-")} == {
        "tokenvault_vault (tokenvault-vault)"
    }, written  # still the session's login role and application, not the functions' owner
    _assert_still_verified(own)
    report = own.vault.wired.verify_audit_fully(None)
    assert [r.event.action for r in who_saw(report, own.vault.wired.keys.ring.audit_keys, erased)] == ["erase"]


@pytest.mark.parametrize(
    "statement",
    [
        "SET ROLE tokenvault_owner",
        "SET SESSION AUTHORIZATION tokenvault_owner",
        "SET session_replication_role = replica",
        "ALTER TABLE vault.audit_log DISABLE TRIGGER audit_log_actions_of_the_database",
        "CREATE RULE forge AS ON INSERT TO vault.audit_log DO INSTEAD NOTHING",
        "CREATE FUNCTION vault.forge() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE FUNCTION public.forge() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ],
)
def test_the_serving_role_cannot_become_the_owner_or_bypass_the_trigger(
    stack_env: dict[str, str], statement: str
) -> None:
    with (
        psycopg.connect(stack_env["PG_VAULT_DSN"]) as serving_role,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        serving_role.execute(statement)


def test_the_serving_role_may_create_no_temporary_object_where_the_migrations_ran(stack_env: dict[str, str]) -> None:
    """TEMPORARY is revoked from PUBLIC (0031); analysts had it back until 0046 (attack 29, F2), the ETL until 0051
    (review 34, R34-1: test_database_privileges.py)."""
    with (
        psycopg.connect(stack_env["PG_VAULT_DSN"]) as serving_role,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="temporary"),
    ):
        serving_role.execute("CREATE TEMP TABLE bait (n int)")
    with (
        psycopg.connect(stack_env["PG_ETL_DSN"]) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="temporary"),
    ):
        conn.execute("CREATE TEMP TABLE staging (n int)")


@pytest.mark.parametrize("role", ["PG_ETL_DSN", "PG_ANALYST_DSN"])
def test_the_etl_and_analysts_cannot_insert_audit_rows_at_all(stack_env: dict[str, str], role: str) -> None:
    with psycopg.connect(stack_env[role]) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(
            "INSERT INTO vault.audit_log (client, action, item_count, outcome) VALUES ('x', 'detokenize', 1, 'ok')"
        )
