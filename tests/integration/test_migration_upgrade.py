"""Migration 0011 on a vault that already holds tokens: nothing a user relies on changes.

Every other test applies all migrations to an empty database. Here a database of its own is
migrated to 0010 only, and the real service issues (and erases) tokens in it, so the sealed
values and fingerprints are genuine. Then 0011 is applied while that service is still running,
and the test checks what a user would notice: every token still reveals its value, the same
values get the same tokens, erasure and key rotation (the four functions 0011 restates) work
on rows written before it, the database refuses duplicates, and the audit chain verifies. The
migrator run again applies nothing, and 0011 run again by hand changes nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from tests.conftest import RunningVault, running_vault, stack_identity
from tests.integration.own_database import database_of_its_own, migrate_before
from tokenvault_client import Revealed, TokenType, VaultClient
from tokenvault_common.migrations import MIGRATIONS_DIR, migrate
from vault_service.adapters.transit import verify_signature
from vault_service.service.audit_verify import verify_audit

UPGRADE = "0011_hash_keys"
_ROWS = (
    "SELECT token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed, next_fingerprint,"
    " created_at, erased_at FROM vault.tokens ORDER BY token"
)
_SCHEMA = {
    "columns": "SELECT attname, format_type(atttypid, atttypmod), attnotnull, attidentity FROM pg_attribute"
    " WHERE attrelid = 'vault.tokens'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    "constraints": "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE conrelid = 'vault.tokens'::regclass ORDER BY conname",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'vault' AND tablename = 'tokens'"
    " ORDER BY indexname",
    "sequences": "SELECT c.relname, s.last_value FROM pg_class c LEFT JOIN pg_sequences s"
    " ON s.schemaname = 'vault' AND s.sequencename = c.relname"
    " WHERE c.relkind = 'S' AND c.relnamespace = 'vault'::regnamespace ORDER BY c.relname",
    "functions": "SELECT proname, md5(prosrc), prosecdef, proowner::regrole::text, proacl::text FROM pg_proc"
    " WHERE pronamespace = 'vault'::regnamespace ORDER BY proname, oid",
    "rows": "SELECT id, token, fingerprint, sealed, dek_id, fingerprint_key_id, erased_at FROM vault.tokens"
    " ORDER BY id",
}


@pytest.fixture
def vault_at_0010(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The stack's settings, pointed at a database of this test's own migrated up to 0010."""
    with database_of_its_own(stack_env, "upgrade") as env:
        applied = migrate_before(env, UPGRADE)
        assert applied[-1].startswith("0010_") and UPGRADE not in applied
        yield env


def _query(env: dict[str, str], statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        return conn.execute(statement, params).fetchall()


def _schema_and_rows(env: dict[str, str]) -> dict[str, list[tuple[Any, ...]]]:
    return {name: _query(env, statement) for name, statement in _SCHEMA.items()}


def _client(env: dict[str, str], vault: RunningVault, who: str) -> VaultClient:
    return VaultClient.connect(vault.address, stack_identity(env, who))


def _tokenize(env: dict[str, str], vault: RunningVault, values: list[tuple[TokenType, str]]) -> list[str]:
    with _client(env, vault, "etl-service") as etl:
        tokens = etl.tokenize(values)
    assert all(isinstance(t, str) for t in tokens), [t for t in tokens if not isinstance(t, str)]
    return [str(t) for t in tokens]


def _revealed(env: dict[str, str], vault: RunningVault, tokens: list[str], purpose: str) -> list[str | None]:
    """The values behind `tokens` as the fraud investigator (plain for both types); None where nothing."""
    with _client(env, vault, "fraud-investigator") as investigator:
        outcomes = investigator.detokenize(tokens, purpose)
    for outcome in outcomes:
        assert isinstance(outcome, Revealed) or outcome.code == grpc.StatusCode.NOT_FOUND, outcome
    return [o.value if isinstance(o, Revealed) else None for o in outcomes]


def _reveal_as_expected(
    env: dict[str, str], vault: RunningVault, tokens: list[str], expected: Sequence[str | None], purpose: str
) -> None:
    """Each token reveals its expected value (None: nothing); a failure names indexes, never values."""
    revealed = _revealed(env, vault, tokens, purpose)
    wrong = [i for i, (got, want) in enumerate(zip(revealed, expected, strict=True)) if got != want]
    assert not wrong, f"{len(wrong)} of {len(tokens)} tokens reveal another value or none, first index {wrong[0]}"


def _erase(env: dict[str, str], vault: RunningVault, tokens: list[str], purpose: str) -> None:
    with _client(env, vault, "privacy-officer") as officer:
        assert officer.erase(tokens, purpose) == [None] * len(tokens)


def _values() -> list[tuple[TokenType, str]]:
    n = uuid.uuid4().int
    ips = [(TokenType.IP, f"10.{n % 250}.{i // 256}.{i % 256}") for i in range(400)]
    devices = [(TokenType.DEVICE_ID, f"{i % 1000:03d}-{n % 100:02d}-{i:04d}") for i in range(150)]
    return ips + devices


def _refused_as_service(env: dict[str, str], token: str, fingerprint: bytes, constraint: str) -> None:
    """A second row with `token` or `fingerprint` of a stored row, inserted by the service's role, is refused."""
    with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as conn:
        (key_id, dek_id, sealed) = conn.execute(
            "SELECT fingerprint_key_id, dek_id, sealed FROM vault.tokens WHERE sealed IS NOT NULL LIMIT 1"
        ).fetchone() or (None, None, None)
        with pytest.raises(psycopg.errors.ExclusionViolation) as refused:
            conn.execute(
                "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed)"
                " VALUES (%s, 'ip', %s, %s, %s, %s)",
                (token, fingerprint, key_id, dek_id, sealed),
            )
    assert refused.value.diag.constraint_name == constraint


def _assert_rows_kept_and_numbered(env: dict[str, str], rows_before: list[tuple[Any, ...]]) -> None:
    """Every row kept every column, each got an id of its own, and the keys are the hash constraints."""
    assert _query(env, _ROWS) == rows_before
    ids = [r[0] for r in _query(env, "SELECT id FROM vault.tokens")]
    assert None not in ids and len(set(ids)) == len(ids) == len(rows_before)
    schema = _schema_and_rows(env)
    constraints = dict(schema["constraints"])
    assert constraints["tokens_pkey"] == "PRIMARY KEY (id)"
    assert constraints["tokens_token_unique"] == "EXCLUDE USING hash (token WITH =)"
    assert constraints["tokens_fingerprint_unique"] == "EXCLUDE USING hash (fingerprint WITH =)"
    assert "tokens_type_fingerprint" not in dict(schema["indexes"])


def _assert_erasure_audited(env: dict[str, str], vault: RunningVault, token: str) -> None:
    """Erasing a token issued before the upgrade: it reveals nothing, its row holds nothing, the log says so."""
    _erase(env, vault, [token], "ERASE-AFTER-0011")
    _reveal_as_expected(env, vault, [token], [None], "CASE-ERASED")
    stored = _query(
        env, "SELECT sealed, fingerprint, erased_at IS NOT NULL FROM vault.tokens WHERE token = %s", (token,)
    )
    assert stored == [(None, None, True)]
    audited = _query(
        env, "SELECT client, outcome FROM vault.audit_log WHERE action = 'erase' AND purpose = 'ERASE-AFTER-0011'"
    )
    assert audited == [("privacy-officer", "ok: 1 erased, 0 not erased")]


def _rotate_every_key(vault: RunningVault, live: int) -> None:
    """A new data key and a new fingerprint key over every row: reseal, set_next and compact all run."""
    rotation = vault.wired.rotation("admin:upgrade-test")
    rotation.rotate_encryption_key("CHG-UPGRADE-1")
    assert rotation.reencrypt("CHG-UPGRADE-1", batch_size=200) == live
    rotation.rotate_fingerprint_key("CHG-UPGRADE-2")
    assert rotation.reindex("CHG-UPGRADE-2", batch_size=200) == live
    status = rotation.status()
    assert status.rows_to_reencrypt == 0 and status.rows_to_reindex == 0


def _from_the_upgrade_on() -> list[Path]:
    """0011 and every migration after it, in the order the migrator applies them."""
    return sorted(path for path in MIGRATIONS_DIR.glob("*.sql") if path.stem >= UPGRADE)


def _assert_reapplying_changes_nothing(env: dict[str, str]) -> None:
    """Nothing left for the migrator; 0011 and the migrations after it, run again by hand, change nothing."""
    settled = _schema_and_rows(env)
    assert migrate(env["PG_ADMIN_DSN"]) == []
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        # From 0011 on, in order: a later migration may restate a function 0011 defines.
        for path in _from_the_upgrade_on():
            conn.execute(path.read_bytes())
    assert _schema_and_rows(env) == settled


def test_a_populated_vault_upgrades_through_0011_without_losing_or_changing_a_token(
    vault_at_0010: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = vault_at_0010
    exported = tmp_path / "checkpoints.jsonl"
    settings = {"TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "1", "TOKENVAULT_AUDIT_CHECKPOINT_FILE": str(exported)}
    issued = _values()
    values, later = issued[:-5], issued[-5:]  # `later`: first issued by the old process after the upgrade
    plain = [v for _, v in values]

    # Before: the real service issues tokens in two calls and erases three of them.
    with running_vault(env, **settings) as old:
        tokens = _tokenize(env, old, values[:300]) + _tokenize(env, old, values[300:])
        assert len(set(tokens)) == len(values)
        erased_before = {tokens[0], tokens[350], tokens[500]}
        _erase(env, old, sorted(erased_before), "ERASE-BEFORE-0011")
        with caplog.at_level(logging.ERROR):
            old.wait_for_checkpoint()
            time.sleep(2.5)  # two more rounds before the upgrade: told to migrate once, not every round
        assert caplog.text.count("apply the migrations (0015)") == 1
        assert caplog.text.count("apply migration 0015") == 1
        # Before 0070 the checkpoints are v1 (no erase-row commitment), said once; audit verify reads them.
        assert caplog.text.count("apply migration 0070; until then checkpoints carry no erase-row commitment") == 1
        before_0070 = verify_audit(old.wired.audit, old.wired.signer.public_keys(), verify_signature, exported)
        assert before_0070.intact and before_0070.checkpoints >= 1, before_0070.finding
        rows_before = _query(env, _ROWS)
        assert len(rows_before) == len(values)

        # The upgrade, with this service still running: it reveals and issues through it.
        assert migrate(env["PG_ADMIN_DSN"]) == [path.stem for path in _from_the_upgrade_on()]
        expected = [None if t in erased_before else v for t, v in zip(tokens, plain, strict=True)]
        _reveal_as_expected(env, old, tokens, expected, "CASE-DURING-UPGRADE")
        _assert_rows_kept_and_numbered(env, rows_before)
        issued_later = _tokenize(env, old, later)
        assert not set(issued_later) & set(tokens)

    with running_vault(env, **settings) as new:  # a fresh process: nothing answered from a cache
        # Same values, same tokens; an erased value gets a new one.
        again = _tokenize(env, new, values + later)
        for before, after in zip(tokens + issued_later, again, strict=True):
            assert (after != before) if before in erased_before else (after == before)
        _reveal_as_expected(env, new, tokens, expected, "CASE-AFTER-0011")
        _reveal_as_expected(env, new, again, plain + [v for _, v in later], "CASE-AFTER-0011")

        # The database itself refuses a second row of a stored token or fingerprint.
        ((fingerprint,),) = _query(env, "SELECT fingerprint FROM vault.tokens WHERE token = %s", (tokens[1],))
        _refused_as_service(env, tokens[1], b"\x01" * 32, "tokens_token_unique")
        _refused_as_service(env, "ip_" + "U" * 22, bytes(fingerprint), "tokens_fingerprint_unique")

        _assert_erasure_audited(env, new, tokens[2])
        # Every value but the one just erased has one live token (erased ones got new tokens).
        _rotate_every_key(new, live=len(again) - 1)
        assert _tokenize(env, new, values[3:] + later) == again[3:]
        _reveal_as_expected(env, new, again[3:], plain[3:] + [v for _, v in later], "CASE-AFTER-ROTATION")

        # The audit chain, from before the upgrade to now, verifies with its signed checkpoints.
        new.wait_for_checkpoint()
        report = verify_audit(new.wired.audit, new.wired.signer.public_keys(), verify_signature, exported)
        assert report.intact, report.finding
        assert report.checkpoints >= 2 and report.unanchored == 0

    _assert_reapplying_changes_nothing(env)
