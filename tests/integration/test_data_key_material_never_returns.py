"""A data key's material never comes back under a new id (attack 24, F1; migration 0027).

The serving role (`tokenvault_vault`, plain SQL, no key) re-inserted a RETIRED data key's wrapped
key and check value as the new active DEK: the vault sealed new values under it and rewrapped it
under each new KEK version, so after the whole crypto-shredding sequence the erased value's
residue in a backup opened through it. Here, against real PostgreSQL and OpenBao: the serving
role's inserts of a retired key (as it was, rewrapped by the vault's AppRole, without a check
value, after the owner deleted its row) are refused, and the service refuses to load one key
under two ids when the owner does it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import psycopg
import pytest

from tests.conftest import RunningVault, running_vault, vault_config
from tests.integration.audit_attacks import as_owner, tokenize_fresh_ip
from tests.integration.openbao_clients import security_client
from tests.integration.own_database import database_of_its_own
from vault_service.bootstrap import bootstrap
from vault_service.domain.errors import KeysUnavailable


class RetiredKey(NamedTuple):
    """A DEK the re-encryption retired, as its row held it."""

    key_id: int
    wrapped_key: str
    check_value: bytes


class Retired(NamedTuple):
    """A vault on a database of its own, and the DEK it retired."""

    env: dict[str, str]
    vault: RunningVault
    key: RetiredKey


@pytest.fixture(scope="module")
def retired(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Retired]:
    """A value sealed under a DEK, that DEK rotated and re-encrypted away: retired, as before a shredding."""
    checkpoints = tmp_path_factory.mktemp("material") / "checkpoints.jsonl"
    with (
        database_of_its_own(stack_env, "material", checkpoint_file=checkpoints, migrated=True) as env,
        running_vault(env) as vault,
    ):
        tokenize_fresh_ip(env, vault)
        rotation = vault.wired.rotation("admin:test")
        rotation.rotate_encryption_key("CHG-2026-2401")
        assert rotation.reencrypt("CHG-2026-2401") == 1
        with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
            row = admin.execute(
                "SELECT id, wrapped_key, check_value FROM vault.data_keys WHERE purpose = 'encryption'"
                " AND state = 'retired'"
            ).fetchone()
        assert row is not None and row[2] is not None
        yield Retired(env, vault, RetiredKey(row[0], row[1], bytes(row[2])))


_AS_THE_ACTIVE_DEK = (
    "UPDATE vault.data_keys SET state = 'decrypt_only' WHERE purpose = 'encryption' AND state = 'active';"
    " INSERT INTO vault.data_keys (purpose, state, wrapped_key, kek_name, check_value)"
    " VALUES ('encryption', 'active', %(wrapped)s, 'tokenvault', %(check)s)"
)


def _as_serving_role(env: dict[str, str], statement: str, params: dict[str, Any]) -> None:
    """`statement` in one transaction of the vault's database role, as the attacker ran it."""
    with psycopg.connect(env["PG_VAULT_DSN"]) as conn, conn.transaction():
        for part in statement.split(";"):
            conn.execute(part, params)


def _keys(env: dict[str, str]) -> list[tuple[Any, ...]]:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
        return admin.execute("SELECT id, purpose, state, wrapped_key FROM vault.data_keys ORDER BY id").fetchall()


def kek_version(wrapped: str) -> int:
    """The KEK version of a Transit ciphertext (`vault:v<N>:...`)."""
    return int(wrapped.split(":")[1][1:])


def _rewrapped(retired: Retired) -> str:
    """The retired key wrapped anew by Transit (the vault's AppRole may ask): another wrapped key, one check value."""
    return retired.vault.wired.wrapper.rewrap(retired.key.wrapped_key)


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("as-it-was", "made fresh: this one is data key"),
        ("rewrapped", "made fresh: this one is data key"),
        ("wrapped-key-with-a-made-up-check-value", "made fresh: this one is data key"),
        ("without-a-check-value", "carries its check value"),
    ],
)
def test_the_serving_role_cannot_bring_a_retired_dek_back_as_the_active_one(
    retired: Retired, case: str, words: str
) -> None:
    key = retired.key
    cases: dict[str, dict[str, Any]] = {
        "as-it-was": {"wrapped": key.wrapped_key, "check": key.check_value},
        "rewrapped": {"wrapped": _rewrapped(retired), "check": key.check_value},
        "wrapped-key-with-a-made-up-check-value": {"wrapped": key.wrapped_key, "check": b"\x01" * 16},
        "without-a-check-value": {"wrapped": _rewrapped(retired), "check": None},
    }
    params = cases[case]
    before = _keys(retired.env)
    with pytest.raises(psycopg.errors.CheckViolation, match=words):
        _as_serving_role(retired.env, _AS_THE_ACTIVE_DEK, params)
    assert _keys(retired.env) == before


def test_the_serving_role_cannot_bring_it_back_as_a_pending_fingerprint_key(retired: Retired) -> None:
    key = retired.key
    with pytest.raises(psycopg.errors.CheckViolation, match=f"this one is data key {key.key_id}"):
        _as_serving_role(
            retired.env,
            "INSERT INTO vault.data_keys (purpose, state, wrapped_key, kek_name, check_value)"
            " VALUES ('fingerprint', 'pending', %(wrapped)s, 'tokenvault', %(check)s)",
            {"wrapped": _rewrapped(retired), "check": key.check_value},
        )


def test_the_service_refuses_to_load_one_key_under_two_ids(retired: Retired) -> None:
    """What the owner may still do (it may do anything in the database) the service refuses to use."""
    key = retired.key
    with as_owner(retired.env) as owner:
        (active,) = owner.execute(
            "UPDATE vault.data_keys SET state = 'decrypt_only' WHERE purpose = 'encryption' AND state = 'active'"
            " RETURNING id"
        ).fetchone() or (None,)
        (planted,) = owner.execute(
            "INSERT INTO vault.data_keys (purpose, state, wrapped_key, kek_name, check_value)"
            " VALUES ('encryption', 'active', %s, 'tokenvault', %s) RETURNING id",
            (_rewrapped(retired), key.check_value),
        ).fetchone() or (None,)
        try:
            with pytest.raises(KeysUnavailable, match=f"data keys {key.key_id} and {planted} are one key"):
                bootstrap(vault_config(retired.env)).close()  # the next start, or `tokenvault status`
        finally:  # the module's vault goes on with its own keys
            owner.execute("DELETE FROM vault.data_keys WHERE id = %s", (planted,))
            owner.execute("UPDATE vault.data_keys SET state = 'active' WHERE id = %s", (active,))


def test_the_serving_role_cannot_rewrap_a_retired_key_in_its_own_row(retired: Retired) -> None:
    """Review 23, R23-4: after a KEK rotation a retired key rewrapped in place survived the operators' trim."""
    security_client(retired.env).secrets.transit.rotate_key(name="tokenvault")
    newer = _rewrapped(retired)
    assert kek_version(newer) > kek_version(retired.key.wrapped_key)
    with pytest.raises(psycopg.errors.CheckViolation, match="a retired key is never rewrapped"):
        _as_serving_role(
            retired.env,
            "UPDATE vault.data_keys SET wrapped_key = %(wrapped)s WHERE id = %(id)s",
            {"wrapped": newer, "id": retired.key.key_id},
        )
    assert [row[3] for row in _keys(retired.env) if row[0] == retired.key.key_id] == [retired.key.wrapped_key]


def test_a_key_row_the_owner_deleted_still_never_comes_back(retired: Retired) -> None:
    key = retired.key
    with psycopg.connect(retired.env["PG_ADMIN_DSN"], autocommit=True) as owner:
        owner.execute("DELETE FROM vault.data_keys WHERE id = %s", (key.key_id,))  # e.g. tidying retired keys
    with pytest.raises(psycopg.errors.CheckViolation, match=f"this one is data key {key.key_id}"):
        _as_serving_role(retired.env, _AS_THE_ACTIVE_DEK, {"wrapped": _rewrapped(retired), "check": key.check_value})
    # A fresh key still goes in: the routine rotation, and the vault seals under it.
    assert retired.vault.wired.rotation("admin:test").rotate_encryption_key("CHG-2026-2402") > key.key_id
    tokenize_fresh_ip(retired.env, retired.vault)
