"""An erased token is never handed out nor revealed again, whatever the database owner makes its row say (attack 43).

Each replica keeps the erased tokens' keyed audit hashes in memory (`vault_service/service/erased_tokens.py`), fed
by its own erasures and by the erase rows of the audit chain, and checks Tokenize's found rows and Detokenize's
fetched rows against them. The owner's three ways to undo an erasure for Tokenize (A43-3: the value and fingerprint
written back, `erased_at` cleared; A43-4: a second row for the token beside the erased one; A43-5: a trigger
deferred to commit copying the erased row back) each got the person's next login the ERASED token before: now
DATA_LOSS, no token. A value erased and tokenized again later gets a new token (no false alarm), and another
replica learns of the erasure from the audit log. Real OpenBao and PostgreSQL, a database of the test's own.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tests.conftest import RunningVault, running_vault, stack_identity
from tests.integration.audit_attacks import as_owner, erase, own_database
from tests.integration.fresh_values import fresh_value
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import ItemError, Revealed, TokenType, VaultClient

__all__ = ["own_database"]


@pytest.fixture
def vault(own_database: dict[str, str]) -> Iterator[RunningVault]:
    with running_vault(own_database) as running:
        yield running


def _tokenize(env: dict[str, str], vault: RunningVault, ip: str) -> object:
    with VaultClient.connect(vault.address, stack_identity(env, "etl-service")) as etl:
        (token,) = etl.tokenize([(TokenType.IP, ip)])
    return token


def _reveal(env: dict[str, str], vault: RunningVault, token: str) -> object:
    with VaultClient.connect(vault.address, stack_identity(env, "fraud-investigator"), deadline=10) as investigator:
        (outcome,) = investigator.detokenize([token], "CASE-A43-SET")
    return outcome


def _columns(env: dict[str, str]) -> list[str]:
    with as_owner(env) as owner:
        described = owner.execute("SELECT * FROM vault.tokens LIMIT 0").description or ()
    return [c.name for c in described if c.name != "id"]


def _backup(env: dict[str, str], token: str) -> tuple[list[str], tuple[object, ...]]:
    """The token's row whole, as a base backup holds it (bytes, no value, no key)."""
    columns = _columns(env)
    with as_owner(env) as owner:
        row = owner.execute(f"SELECT {', '.join(columns)} FROM vault.tokens WHERE token = %s", (token,)).fetchone()
    assert row is not None
    return columns, tuple(row)


def _refused(outcome: object) -> None:
    assert not isinstance(outcome, str), "Tokenize handed the erased token out again"
    assert isinstance(outcome, ItemError) and outcome.code == grpc.StatusCode.DATA_LOSS, outcome
    assert "erased token is present again" in outcome.message


def _not_revealed(outcome: object) -> None:
    assert not isinstance(outcome, Revealed), "the erased value was revealed again"
    assert isinstance(outcome, ItemError), outcome
    assert outcome.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.DATA_LOSS), outcome


def test_a43_3_value_and_fingerprint_written_back_with_the_erased_mark_cleared_is_refused(
    own_database: dict[str, str], vault: RunningVault
) -> None:
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    token = _tokenize(own_database, vault, ip)
    assert isinstance(token, str)
    with as_owner(own_database) as owner:
        (sealed, fingerprint) = owner.execute(
            "SELECT sealed, fingerprint FROM vault.tokens WHERE token = %s", (token,)
        ).fetchone() or (None, None)
    assert erase(own_database, vault, [token], "GDPR-2026-4330") == [None]
    with as_owner(own_database) as owner:  # the row as it was: no trace of the erasure in vault.tokens
        owner.execute(
            "UPDATE vault.tokens SET sealed = %s, fingerprint = %s, erased_at = NULL WHERE token = %s",
            (sealed, fingerprint, token),
        )
    _refused(_tokenize(own_database, vault, ip))  # the person's next login: no token, DATA_LOSS
    outcome = _reveal(own_database, vault, token)
    _not_revealed(outcome)
    assert isinstance(outcome, ItemError) and outcome.code == grpc.StatusCode.DATA_LOSS  # a value there again


def test_a43_4_shadow_row_beside_the_erased_one_is_refused_at_every_later_login(
    own_database: dict[str, str], vault: RunningVault
) -> None:
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    token = _tokenize(own_database, vault, ip)
    assert isinstance(token, str)
    columns, backup = _backup(own_database, token)
    assert erase(own_database, vault, [token], "GDPR-2026-4350") == [None]
    with as_owner(own_database) as owner:  # session_replication_role = replica: the insert's triggers off
        owner.execute("ALTER TABLE vault.tokens DROP CONSTRAINT tokens_token_unique CASCADE")
        owner.execute(
            f"INSERT INTO vault.tokens ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})", backup
        )
    for _ in range(3):
        _refused(_tokenize(own_database, vault, ip))
    _not_revealed(_reveal(own_database, vault, token))  # whichever of the two rows the fetch lands on


def test_a43_5_deferred_trigger_copying_the_erased_row_back_is_refused(
    own_database: dict[str, str], vault: RunningVault
) -> None:
    columns = _columns(own_database)
    values = ", ".join("NULL" if c == "erased_at" else f"OLD.{c}" for c in columns)
    with as_owner(own_database) as owner:  # installed once, before any erasure
        owner.execute("ALTER TABLE vault.tokens DROP CONSTRAINT tokens_token_unique CASCADE")
        owner.execute(
            "CREATE FUNCTION public.keep_erased() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
            " SET session_replication_role = replica AS $$ BEGIN"
            f" INSERT INTO vault.tokens ({', '.join(columns)}) VALUES ({values}); RETURN NULL; END $$"
        )
        owner.execute(
            "CREATE CONSTRAINT TRIGGER keep_erased AFTER UPDATE ON vault.tokens DEFERRABLE INITIALLY DEFERRED"
            " FOR EACH ROW WHEN (OLD.sealed IS NOT NULL AND NEW.sealed IS NULL AND NEW.erased_at IS NOT NULL)"
            " EXECUTE FUNCTION public.keep_erased()"
        )
        owner.execute("ALTER TABLE vault.tokens ENABLE ALWAYS TRIGGER keep_erased")
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    token = _tokenize(own_database, vault, ip)
    assert isinstance(token, str)
    assert erase(own_database, vault, [token], "GDPR-2026-4360") == [None]
    with as_owner(own_database) as owner:
        live = owner.execute(
            "SELECT count(*) FROM vault.tokens WHERE token = %s AND erased_at IS NULL AND sealed IS NOT NULL", (token,)
        ).fetchone()
    assert live == (1,)  # the owner's copy is there, live
    _refused(_tokenize(own_database, vault, ip))
    _not_revealed(_reveal(own_database, vault, token))


def test_an_erased_value_tokenized_again_gets_a_new_token_and_another_replica_learns_of_the_erasure(
    own_database: dict[str, str], vault: RunningVault
) -> None:
    ip, other_ip = fresh_value(vault_pb2.TOKEN_TYPE_IP), fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(own_database) as other:  # a second replica, started before the erasures
        token, other_token = _tokenize(own_database, vault, ip), _tokenize(own_database, vault, other_ip)
        assert isinstance(token, str) and isinstance(other_token, str)
        assert erase(own_database, vault, [token], "GDPR-2026-4370") == [None]
        again = _tokenize(own_database, vault, ip)  # the person comes back after the erasure: no false alarm
        assert isinstance(again, str) and again != token
        assert isinstance(_reveal(own_database, other, again), Revealed)
        # The second replica learns of an erasure made on the first from the audit log's erase row.
        columns, backup = _backup(own_database, other_token)
        assert erase(own_database, vault, [other_token], "GDPR-2026-4371") == [None]
        with as_owner(own_database) as owner:
            sets = ", ".join(f"{c} = %s" for c in columns)
            owner.execute(f"UPDATE vault.tokens SET {sets} WHERE token = %s", (*backup, other_token))
        other.maintainer.check()  # its next key-check round
        _refused(_tokenize(own_database, other, other_ip))
        _not_revealed(_reveal(own_database, other, other_token))
    with running_vault(own_database) as started_after:  # and a replica started after it, from the whole log
        _refused(_tokenize(own_database, started_after, other_ip))
