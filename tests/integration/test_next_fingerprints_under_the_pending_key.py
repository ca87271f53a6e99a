"""A next fingerprint counts only under the pending key it was written for (attack 24, F2; migration 0028).

The serving role (`tokenvault_vault`, SQL only, no key) planted garbage next fingerprints with
`vault.set_next_fingerprints` while no fingerprint rotation was under way; the next routine
rotate-fingerprint-key + reindex skipped those rows, compaction moved the garbage into place, and
after a restart every such value got a second token. Here, against real PostgreSQL and OpenBao:
the plant is refused, and a next fingerprint left from before (stale or planted, under no pending
key) is re-done by the re-index, so a fresh vault process still finds every value's one token.
And `reindex` compacts a row held locked before it says ok (F3: it ended at the first empty
batch, leaving that row's fingerprint under the retired key).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import NamedTuple

import psycopg
import pytest

from tests.conftest import RunningVault, running_vault, stack_identity
from tests.integration.audit_attacks import as_owner
from tests.integration.own_database import database_of_its_own
from tokenvault_client import TokenType, VaultClient
from vault_service.domain.errors import NextFingerprintsAltered, StorageError
from vault_service.service import rotation as rotation_module

_VALUES = [(TokenType.IP, f"198.51.100.{i}") for i in range(1, 13)]


class Vault(NamedTuple):
    """A vault on a database of its own, and the tokens of `_VALUES` it issued."""

    env: dict[str, str]
    vault: RunningVault
    tokens: list[str]


def _tokenize(env: dict[str, str], vault: RunningVault, values: list[tuple[TokenType, str]]) -> list[str]:
    with VaultClient.connect(vault.address, stack_identity(env, "etl-service")) as etl:
        tokens = etl.tokenize(values)
    assert all(isinstance(t, str) for t in tokens), tokens
    return [str(t) for t in tokens]


@pytest.fixture(scope="module")
def issued(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    checkpoints = tmp_path_factory.mktemp("next_fp") / "checkpoints.jsonl"
    with (
        database_of_its_own(stack_env, "next_fp", checkpoint_file=checkpoints, migrated=True) as env,
        running_vault(env) as vault,
    ):
        yield Vault(env, vault, _tokenize(env, vault, _VALUES))


def _next_fingerprints(env: dict[str, str]) -> int:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
        row = admin.execute("SELECT count(*) FROM vault.tokens WHERE next_fingerprint IS NOT NULL").fetchone()
    return int(row[0]) if row else 0


def test_the_serving_role_cannot_plant_next_fingerprints_outside_a_rotation(issued: Vault) -> None:
    garbage = [bytes([i]) * 32 for i in range(len(issued.tokens))]
    with (
        psycopg.connect(issued.env["PG_VAULT_DSN"], autocommit=True) as conn,
        pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="no fingerprint key is pending"),
    ):
        conn.execute(
            "SELECT vault.set_next_fingerprints(%s::text[], %s::bytea[], 'vault-service')", (issued.tokens, garbage)
        )
    assert _next_fingerprints(issued.env) == 0


def test_a_next_fingerprint_under_no_pending_key_is_re_done_by_the_reindex(issued: Vault) -> None:
    env, vault = issued.env, issued.vault
    with as_owner(env) as owner:  # as the serving role could before 0028: garbage, under no pending key
        owner.execute(
            "UPDATE vault.tokens SET next_fingerprint = sha256(token::bytea) WHERE token = ANY(%s)", (issued.tokens,)
        )
    rotation = vault.wired.rotation("admin:test")
    rotation.rotate_fingerprint_key("CHG-2026-2402")
    (during,) = _tokenize(env, vault, [(TokenType.IP, "198.51.100.200")])  # a new value during the rotation
    assert rotation.reindex("CHG-2026-2402") == len(issued.tokens)  # the planted ones re-done (the new one was not)
    assert _next_fingerprints(env) == 0  # compacted
    with running_vault(env) as fresh:  # a new process: no token cache hides a lost fingerprint
        assert _tokenize(env, fresh, [*_VALUES, (TokenType.IP, "198.51.100.200")]) == [*issued.tokens, during]
    with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
        clients = admin.execute(
            "SELECT DISTINCT client FROM vault.audit_log WHERE action = 'reindex'"
            " AND outcome LIKE 'ok: % fingerprinted under pending key %'"
        ).fetchall()
    assert (
        clients and [c for (c,) in clients if not c.startswith("tokenvault_vault")] == []
    )  # the session, not a claimed name


def test_the_reindex_compacts_a_row_held_locked_before_it_says_ok(
    issued: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack 24, F3: compaction skipped a locked row; `reindex` said ok with its fingerprint under a retired key."""
    env, vault = issued.env, issued.vault
    rotation = vault.wired.rotation("admin:test")
    rotation.rotate_fingerprint_key("CHG-2026-2403")
    done: list[int] = []
    with psycopg.connect(env["PG_ADMIN_DSN"]) as holder:
        # FOR KEY SHARE lets the re-fingerprinting's UPDATE through, not compaction's FOR UPDATE (SKIP LOCKED).
        holder.execute("SELECT 1 FROM vault.tokens WHERE token = %s FOR KEY SHARE", (issued.tokens[0],))
        with monkeypatch.context() as short:  # held past the wait: it fails, and its outcome row says so
            short.setattr(rotation_module, "COMPACTION_WAIT_SECONDS", 0.3)
            with pytest.raises(StorageError, match=re.escape("1 value(s) still have their fingerprint under a")):
                rotation.reindex("CHG-2026-2403")
        with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
            outcome = admin.execute(
                "SELECT outcome FROM vault.audit_log WHERE client = 'admin:test' AND action = 'reindex'"
                " ORDER BY id DESC LIMIT 1"
            ).fetchone()
        assert outcome and outcome[0].startswith("unfinished: 1 value(s) still have their fingerprint")
        left = rotation.status()  # promoted: nothing to re-index, the locked row to compact (chaos 50, V50-5)
        assert (left.rows_to_reindex, left.rows_to_compact) == (0, 1)
        job = threading.Thread(target=lambda: done.append(rotation.reindex("CHG-2026-2403")))
        job.start()
        job.join(timeout=1.0)
        assert job.is_alive(), "reindex ended while a row was left to compact"
    job.join(timeout=10)
    assert done and _next_fingerprints(env) == 0
    status = rotation.status()
    assert status.rows_to_reindex == 0


def test_next_fingerprints_planted_during_a_rotation_stop_the_promotion(issued: Vault) -> None:
    """Review 23, R23-1: during a rotation the serving role planted garbage next fingerprints on rows the
    re-index had not reached; the re-index skipped them and compaction installed the garbage."""
    env, vault = issued.env, issued.vault
    rotation = vault.wired.rotation("admin:test")
    rotation.rotate_fingerprint_key("CHG-2026-2404")
    (during,) = _tokenize(env, vault, [(TokenType.IP, "198.51.100.201")])  # its next fingerprint: the service's
    garbage = [bytes([i + 1]) * 32 for i in range(len(issued.tokens))]
    with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as serving:
        serving.execute(
            "SELECT vault.set_next_fingerprints(%s::text[], %s::bytea[], 'vault-service')", (issued.tokens, garbage)
        )
    with pytest.raises(NextFingerprintsAltered, match=f"^{len(issued.tokens)} next fingerprint\\(s\\) under pending"):
        rotation.reindex("CHG-2026-2404")
    with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
        kept = admin.execute(
            "SELECT token FROM vault.tokens WHERE next_fingerprint IS NOT NULL AND token <> ALL(%s)", (issued.tokens,)
        ).fetchall()
    assert _next_fingerprints(env) == len(kept) and (during,) in kept  # the planted ones cleared, the others kept
    assert [k.state for k in rotation.status().keys if k.purpose == "fingerprint"][-1] == "pending"  # not promoted
    with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
        (outcome,) = admin.execute(
            "SELECT outcome FROM vault.audit_log WHERE client = 'admin:test' AND action = 'reindex'"
            " ORDER BY id DESC LIMIT 1"
        ).fetchone() or ("",)
    assert outcome.startswith(f"refused: {len(issued.tokens)} next fingerprint(s) under pending key")
    everything = [*_VALUES, (TokenType.IP, "198.51.100.201")]
    with running_vault(env) as fresh:  # a new process: no token cache hides a lost fingerprint
        assert _tokenize(env, fresh, everything) == [*issued.tokens, during]
    assert rotation.reindex("CHG-2026-2404") == len(issued.tokens)  # the remedy: run it again
    assert _next_fingerprints(env) == 0 and rotation.status().rows_to_reindex == 0
    with running_vault(env) as fresh:
        assert _tokenize(env, fresh, everything) == [*issued.tokens, during]
