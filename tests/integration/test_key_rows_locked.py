"""A data-key row locked by a serving-role session makes a key job fail fast, holding no chain lock (attack 27, F5).

The serving role's column UPDATE grant on vault.data_keys lets it `SELECT ... FOR UPDATE` a key row and leave
its transaction open. Before, the re-index's promotion then waited on that row *holding the audit chain's lock*
(its first UPDATE's audit row): every reveal failed, and the vault's own upkeep ended the key job as the culprit
while the idle session stayed; `rotate-encryption-key` waited for ever holding the key-generation lock, with every
new token queued behind it. Now each key operation locks the rows it changes first, waiting 2 s at most, before any
audited statement: the job fails within seconds, its outcome row says `failed:` naming the lock, reveals go on
meanwhile, and the job runs once the row is free.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.conftest import running_vault, stack_identity
from tests.integration.audit_attacks import own_database
from tests.integration.test_reseal_refused_or_kept import _tokenize
from tests.integration.test_rows_that_do_not_open import _last_outcome
from tokenvault_client import NO_RETRY, Revealed, VaultClient
from vault_service.adapters.postgres import chain_lock
from vault_service.domain.errors import DatabaseUnavailable

__all__ = ["own_database"]

NAMES_THE_ROW = "a row of vault.data_keys this job changes"


class _Reveals(threading.Thread):
    """One-token reveals, no retry, every 0.2 s until stopped: the failures seen."""

    def __init__(self, client: VaultClient, token: str) -> None:
        super().__init__(daemon=True)
        self.client, self.token, self.served = client, token, 0
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                (answer,) = self.client.detokenize([self.token], "CASE-A27-F5")
                assert isinstance(answer, Revealed)
                self.served += 1
            except Exception as error:
                self.failures.append(type(error).__name__)
            self.stopping.wait(0.2)


def _lock_key_row(env: dict[str, str], key_id: int) -> psycopg.Connection:
    rogue = psycopg.connect(env["PG_VAULT_DSN"])  # the serving role; its transaction left open
    rogue.execute("SELECT id FROM vault.data_keys WHERE id = %s FOR UPDATE", (key_id,))
    return rogue


def test_a_locked_key_row_makes_the_key_jobs_fail_fast_holding_no_chain_lock(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = own_database
    # The job's own bounded wait is what is tested here: the upkeep's watch would end the session keeping a key
    # job of its process waiting 1 s (review 31, R31-2; test_lock_blockers_ended.py), and the job go through.
    monkeypatch.setattr(chain_lock, "KEY_JOB_WAITED_SECONDS", 60.0)
    with running_vault(env) as vault:
        tokens = _tokenize(env, vault, [f"198.51.100.{n}" for n in range(20, 23)])
        rotation = vault.wired.rotation("admin:test")
        pending = rotation.rotate_fingerprint_key("CHG-A27-F5")
        with VaultClient.connect(vault.address, stack_identity(env, "fraud-investigator"), retry=NO_RETRY) as client:
            reveals = _Reveals(client, tokens[0])
            reveals.start()
            rogue = _lock_key_row(env, pending)
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable) as failed:  # before: ended by the vault's own upkeep after ~5 s
                rotation.reindex("CHG-A27-F5", batch_size=100)
            took = time.monotonic() - started
            assert NAMES_THE_ROW in str(failed.value)
            assert _last_outcome(env, "reindex") == f"failed: {failed.value}"
            rogue.rollback()  # the row is free: the job runs
            assert rotation.reindex("CHG-A27-F5", batch_size=100) == 0  # every row was done by the first run
            assert vault.wired.keys.refresh().generation.fingerprint_id == pending

            active_dek = vault.wired.keys.refresh().generation.encryption_id
            rogue = _lock_key_row(env, active_dek)
            with pytest.raises(DatabaseUnavailable) as failed_rotation:  # before: waited for ever
                rotation.rotate_encryption_key("CHG-2706")
            assert NAMES_THE_ROW in str(failed_rotation.value)
            assert _last_outcome(env, "rotate-encryption-key") == f"failed: {failed_rotation.value}"
            rogue.rollback()
            rogue.close()
            reveals.stopping.set()
            reveals.join(5)
        assert vault.wired.keys.refresh().generation.encryption_id == active_dek  # nothing changed
    assert took < 5  # the 2 s wait, never the upkeep's 5 s
    assert reveals.failures == [] and reveals.served > 0  # no chain lock held while the job waited
