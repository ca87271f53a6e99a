"""An erasure the database refused erased nothing, and gives its erase budget back (chaos 50, V50-4).

Real OpenBao and PostgreSQL, a database of the test's own (its erase budget is the officer's alone
here). The privacy officer's budget is 100 tokens, then one every 200 s (config/vault-policy.toml).
A row of one token is held `FOR UPDATE` past the erasure's 2 s wait, as a key job's batch holds the
rows it re-seals: the erasure of 100 tokens is refused UNAVAILABLE, "nothing was erased; retry".
Before the fix its 100 were spent all the same and the retry was refused RESOURCE_EXHAUSTED (one
token every 200 s: 5.5 hours for the 100); now the retry erases them all, and spends the budget once.
An erasure whose COMMIT committed but whose answer was lost (a proxy cutting it) keeps its budget spent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.conftest import RunningVault, running_vault, stack_identity
from tests.integration.erase_calls import erasing_in_background
from tests.integration.fresh_values import fresh_value
from tests.integration.own_database import database_of_its_own
from tests.integration.pg_backends import lower_the_watch_floor
from tests.integration.pg_commit_cut import ERASE_MARK, CommitCut
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import NO_RETRY, TokenType, VaultClient, VaultClientError

OFFICER = "privacy-officer"


@pytest.fixture
def own(stack_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[dict[str, str], RunningVault]]:
    with (
        database_of_its_own(stack_env, "erasebudget", migrated=True, checkpoint_file=tmp_path / "cp.jsonl") as env,
        running_vault(env) as vault,
    ):
        yield env, vault


def _erase_budget_left(env: dict[str, str]) -> float:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT tokens FROM vault.call_budget WHERE client = %s AND kind = 'erase'", (OFFICER,)
        ).fetchone()
    assert row is not None
    return float(row[0])


def test_an_erasure_refused_by_the_database_gives_its_budget_back_and_the_retry_erases(
    own: tuple[dict[str, str], RunningVault],
) -> None:
    env, vault = own
    with VaultClient.connect(vault.address, stack_identity(env, "etl-service")) as etl:
        tokens = [
            str(t) for t in etl.tokenize([(TokenType.IP, fresh_value(vault_pb2.TOKEN_TYPE_IP)) for _ in range(100)])
        ]
    assert len(set(tokens)) == 100
    with VaultClient.connect(vault.address, stack_identity(env, OFFICER), retry=NO_RETRY) as officer:
        with psycopg.connect(env["PG_ADMIN_DSN"]) as holder:  # a key job's batch holding a row it re-seals
            holder.execute("SELECT 1 FROM vault.tokens WHERE token = %s FOR UPDATE", (tokens[50],))
            with pytest.raises(VaultClientError, match="nothing was erased") as refused:
                officer.erase(tokens, "GDPR-2026-5004")
        assert refused.value.code.name == "UNAVAILABLE"
        assert _erase_budget_left(env) >= 99  # given back (before the fix: 0, and the retry refused for hours)
        outcomes = officer.erase(tokens, "GDPR-2026-5004")  # the retry the refusal asks for
    assert outcomes == [None] * 100
    assert _erase_budget_left(env) < 1  # spent once, by the erasure that erased


@pytest.fixture
def cut(stack_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[dict[str, str], RunningVault, CommitCut]]:
    """A vault whose database connections go through a proxy that can lose an erasure's COMMIT answer."""
    with database_of_its_own(stack_env, "erasecut", migrated=True, checkpoint_file=tmp_path / "cp.jsonl") as env:
        proxy = CommitCut(int(urlsplit(env["PG_VAULT_DSN"]).port or 5432), mark=ERASE_MARK)
        try:
            with running_vault(
                env,
                TOKENVAULT_DATABASE_DSN=proxy.dsn(env["PG_VAULT_DSN"]),
                TOKENVAULT_AUDIT_CHECKPOINT_FILE=str(tmp_path / "cp.jsonl"),
            ) as vault:
                yield env, vault, proxy
        finally:
            proxy.close()


def test_an_erasure_whose_commit_answer_was_lost_keeps_its_budget_spent(
    cut: tuple[dict[str, str], RunningVault, CommitCut],
) -> None:
    """Review 51, R51-1: the COMMIT went out before the store noted it, so a committed erasure gave its budget back."""
    env, vault, proxy = cut
    with VaultClient.connect(vault.address, stack_identity(env, "etl-service")) as etl:
        tokens = [
            str(t) for t in etl.tokenize([(TokenType.IP, fresh_value(vault_pb2.TOKEN_TYPE_IP)) for _ in range(100)])
        ]
    with VaultClient.connect(vault.address, stack_identity(env, OFFICER), retry=NO_RETRY) as officer:
        proxy.arm()
        with pytest.raises(VaultClientError) as lost:
            officer.erase(tokens, "GDPR-2026-5005")
    assert proxy.cuts == 1, "the erasure's COMMIT did not go through the proxy"
    assert lost.value.code.name == "UNAVAILABLE"
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        erased = conn.execute(
            "SELECT count(*) FROM vault.tokens WHERE token = ANY(%s) AND erased_at IS NOT NULL", (tokens,)
        ).fetchone()
    assert erased == (100,)  # the COMMIT committed: all 100 erased
    assert _erase_budget_left(env) < 1  # so spent (before the fix: ~100 given back, as for an erasure refused)


def test_a_give_back_held_by_a_serving_session_still_says_nothing_was_erased_within_seconds(
    own: tuple[dict[str, str], RunningVault],
) -> None:
    """Review 51, R51-2/3: a session of the serving role holding the officer's budget row (take_call_budget in a
    transaction left open) kept the give-back waiting until the upkeep's watch ended it (5 s of keeping a vault
    session waiting, R31-6), or as long as it liked where the watch is blind; and a give-back refused replaced
    the erasure's "nothing was erased; retry later" with its own error, naming the audit chain's lock. Now it
    waits 2 s, as the take and every other lock wait of the vault do, and the erasure's own error is told."""
    env, vault = own
    # The upkeep's watch blind to the holder, as with an owner lacking pg_signal_backend (chain_lock.py): else it
    # ends the holder once it has kept the give-back waiting 5 s, and the wait before the fix ended there.
    lower_the_watch_floor(env["PG_ADMIN_DSN"], held_seconds=600, waited_seconds=600)
    with VaultClient.connect(vault.address, stack_identity(env, "etl-service")) as etl:
        tokens = [
            str(t) for t in etl.tokenize([(TokenType.IP, fresh_value(vault_pb2.TOKEN_TYPE_IP)) for _ in range(10)])
        ]
    with (
        VaultClient.connect(vault.address, stack_identity(env, OFFICER), retry=NO_RETRY) as officer,
        psycopg.connect(env["PG_ADMIN_DSN"]) as holder,  # a key job's batch holding a row it re-seals
        psycopg.connect(env["PG_VAULT_DSN"]) as rogue,  # the serving role's credentials, elsewhere
    ):
        holder.execute("SELECT 1 FROM vault.tokens WHERE token = %s FOR UPDATE", (tokens[5],))
        erasing, ended = erasing_in_background(officer, tokens, "GDPR-2026-5006", env)  # waits on the held row
        rogue.execute(  # holds the officer's budget row until this transaction ends (no watchdog ends the role's)
            "SELECT vault.take_call_budget(%s, 'erase', 1, 1, 0.005, 100)", (OFFICER,)
        )
        held = time.monotonic()
        erasing.join(timeout=15)
        took = time.monotonic() - held
        rogue.rollback()  # before the fix the give-back waited for this
        erasing.join(timeout=30)
    # The erasure's own wait (2 s, begun as the budget was taken) and the give-back's 2 s: about 4 s. Before the fix
    # its answer waited for the holder (with the watch seeing it: ~6 s, until the watch ended the holder).
    assert took < 6, f"the erasure's answer waited {took:.1f} s on the held budget row"
    (error,) = ended
    assert isinstance(error, VaultClientError) and error.code.name == "UNAVAILABLE", error
    assert "nothing was erased" in str(error), error  # the erasure's own refusal, not the give-back's
