"""Key rotation on real OpenBao and Postgres: under concurrent load, no token changes and no
call fails; a killed re-encryption job resumes; old KEK versions can then be retired.

Each test runs on a migrated database of its own: the session's database holds every earlier
test's tokens, and re-encrypting and re-indexing all of them cost CI about 25 s more. The KEK
(OpenBao's transit key) is the stack's: the session database's keys are rewrapped before old
versions are retired, as on any vault sharing the KEK.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from devstack.stack import vault_service_env
from tests.conftest import RunningVault, running_vault, vault_config
from tests.integration.openbao_clients import security_client
from tests.integration.own_database import database_of_its_own
from tokenvault_client import NO_RETRY, Revealed, TokenType, VaultClient, VaultClientError
from vault_service.bootstrap import Bootstrapped
from vault_service.bootstrap import bootstrap as vault_bootstrap
from vault_service.domain.errors import KeysUnavailable, StorageError
from vault_service.service.ports import INTENT_HELD

IP = TokenType.IP
ClientFor = Callable[..., VaultClient]
REPO = Path(__file__).resolve().parents[2]


def ip(n: int, prefix: int = 172) -> str:
    return f"{prefix}.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


def tokenize(client: VaultClient, values: list[tuple[TokenType, str]]) -> list[str]:
    tokens = client.tokenize(values)
    assert all(isinstance(t, str) for t in tokens)
    return [str(t) for t in tokens]


def revealed(client: VaultClient, tokens: list[str], purpose: str) -> list[str | None]:
    return [r.value if isinstance(r, Revealed) else None for r in client.detokenize(tokens, purpose)]


@pytest.fixture
def own_env(stack_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """The stack's settings on a migrated database of the test's own, exporting checkpoints to a file of its own."""
    checkpoints = tmp_path / "checkpoints.jsonl"
    with database_of_its_own(stack_env, "rotation", migrated=True, checkpoint_file=checkpoints) as env:
        yield env


@pytest.fixture
def own_vault(own_env: dict[str, str]) -> Iterator[RunningVault]:
    """The serving vault on the test's database."""
    with running_vault(own_env) as running:
        yield running


@pytest.fixture
def admin(own_env: dict[str, str], own_vault: RunningVault) -> Iterator[Bootstrapped]:
    """The security team's tooling: the vault's wiring in a process of its own."""
    wired = vault_bootstrap(vault_config(own_env))
    try:
        yield wired
    finally:
        wired.close()


class Load:
    """Threads that tokenize known and new values and detokenize known tokens until stopped."""

    def __init__(self, stubs: list[VaultClient], analyst: VaultClient, known: dict[str, str]) -> None:
        """Clients without retries: a call that fails must show up as a failure, not be retried away."""
        self.stubs, self.analyst, self.known = stubs, analyst, known
        self.failures: list[str] = []
        self.new_tokens: dict[str, set[str]] = {}
        self.calls = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._tokenizer, args=(i,)) for i in range(len(stubs))]
        self._threads.append(threading.Thread(target=self._detokenizer))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _tokenizer(self, index: int) -> None:
        known = list(self.known.items())
        n = 0
        while not self._stop.is_set():
            n += 1
            batch_known = known[(n * 37) % len(known) :][:100]
            new = [ip(index * 1_000_000 + n * 50 + k, prefix=173) for k in range(50)]
            try:
                tokens = tokenize(self.stubs[index], [(IP, v) for v, _ in batch_known] + [(IP, v) for v in new])
            except VaultClientError as error:
                self.failures.append(f"tokenize: {error}")
                continue
            self.calls += 1
            for (_, expected), got in zip(batch_known, tokens, strict=False):
                if got != expected:
                    self.failures.append(f"token changed for a known value: {expected} -> {got}")
            for value, token in zip(new, tokens[len(batch_known) :], strict=True):
                self.new_tokens.setdefault(value, set()).add(token)

    def _detokenizer(self) -> None:
        known = list(self.known.items())
        n = 0
        while not self._stop.is_set():
            n += 1
            sample = known[(n * 53) % len(known) :][:40]
            try:
                results = revealed(self.analyst, [t for _, t in sample], "ROTATION-LOAD")
            except VaultClientError as error:
                self.failures.append(f"detokenize: {error}")
                continue
            self.calls += 1
            for (value, _), result in zip(sample, results, strict=True):
                if result != value:
                    self.failures.append("detokenize gave a wrong value or an error")
            time.sleep(0.25)  # stay under the analyst's 200 values/s limit


def test_every_rotation_under_load_changes_no_token_and_fails_no_call(
    stack_env: dict[str, str],
    own_env: dict[str, str],
    own_vault: RunningVault,
    vault: RunningVault,
    client_for: ClientFor,
    admin: Bootstrapped,
) -> None:
    address = own_vault.address
    values = [ip(n) for n in range(3000)]
    known = dict(zip(values, tokenize(client_for("etl-service", address), [(IP, v) for v in values]), strict=True))
    rotation = admin.rotation("admin:test")
    security = security_client(stack_env)
    old_wrapped = {k.key_id: k.wrapped_key for k in admin.key_store.load_keys()}

    with running_vault(own_env, TOKENVAULT_KEY_CHECK_SECONDS="1") as replica:
        stubs = [
            client_for("etl-service", address, retry=NO_RETRY),
            client_for("etl-service", replica.address, retry=NO_RETRY),
        ]
        with Load(stubs, client_for("analyst", address, retry=NO_RETRY), known) as load:
            time.sleep(0.5)
            # 1. KEK rotated in Vault by the security team, picked up by the replica without restart.
            security.secrets.transit.rotate_key(name="tokenvault")
            latest = security.secrets.transit.read_key(name="tokenvault")["data"]["latest_version"]
            deadline = time.monotonic() + 15
            while any(k.kek_version < latest for k in admin.key_store.load_keys() if k.state != "retired"):
                assert time.monotonic() < deadline, "the running service did not rewrap after the KEK rotation"
                time.sleep(0.2)
            # 2. New DEK, online re-encryption.
            new_dek = rotation.rotate_encryption_key("CHG-1")
            moved = rotation.reencrypt("CHG-1", batch_size=500)
            # 3. New fingerprint key, online re-index.
            rotation.rotate_fingerprint_key("CHG-2")
            reindexed = rotation.reindex("CHG-2", batch_size=500)
            time.sleep(1.0)
        status = rotation.status()

    assert load.failures == []
    assert load.calls > 10
    assert moved >= len(known) and reindexed >= len(known)
    assert status.rows_to_reencrypt == 0 and status.rows_to_reindex == 0
    assert {k.key_id: k.state for k in status.keys}[new_dek] == "active"
    assert all(len(tokens) == 1 for tokens in load.new_tokens.values()), "a new value got two tokens"
    assert tokenize(client_for("etl-service", address), [(IP, v) for v in values]) == [known[v] for v in values]
    new_values = list(load.new_tokens)
    again = tokenize(client_for("etl-service", address), [(IP, v) for v in new_values])
    assert again == [next(iter(load.new_tokens[v])) for v in new_values]

    # 4. Every live key is wrapped by the newest KEK version: old versions can be retired.
    assert status.safe_min_decryption_version == status.kek_latest_version
    # The session database's keys too (the stack's KEK): the other tests need them. The session
    # vault's own key check may rewrap one first; the database refuses the same version twice.
    deadline = time.monotonic() + 15
    while any(k.kek_version < latest for k in vault.wired.key_store.load_keys() if k.state != "retired"):
        assert time.monotonic() < deadline, "the session database's keys were not rewrapped"
        with contextlib.suppress(StorageError):
            vault.wired.keys.rewrap_outdated()
    security.secrets.transit.update_key_configuration(
        name="tokenvault", min_decryption_version=status.kek_latest_version
    )
    old = next(w for w in old_wrapped.values() if int(w.split(":")[1][1:]) < status.kek_latest_version)
    with pytest.raises(KeysUnavailable, match="Vault refused to unwrap"):
        admin.wrapper.unwrap(old)  # a key wrapped before the rotation no longer opens
    with running_vault(own_env) as restarted:  # a fresh start unwraps everything with the new version only
        investigator = client_for("fraud-investigator", restarted.address)
        assert revealed(investigator, [known[v] for v in values[:50]], "CASE-AFTER-ROTATION") == values[:50]
    with psycopg.connect(own_env["PG_ADMIN_DSN"]) as conn:
        actions = [
            r[0] for r in conn.execute("SELECT action FROM vault.audit_log WHERE client = 'admin:test'").fetchall()
        ]
    assert {"rotate-encryption-key", "reencrypt", "rotate-fingerprint-key", "reindex"} <= set(actions)


def _admin(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vault_service.admin", *args],
        env={
            **vault_service_env(env),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "VAULT_SECURITY_TOKEN_FILE": env["VAULT_SECURITY_TOKEN_FILE"],
            "TOKENVAULT_AUDIT_CHECKPOINT_FILE": env["TOKENVAULT_AUDIT_CHECKPOINT_FILE"],
        },
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_killed_reencryption_job_resumes_where_it_stopped(
    own_env: dict[str, str], own_vault: RunningVault, client_for: ClientFor, admin: Bootstrapped
) -> None:
    values = [ip(n, prefix=174) for n in range(6000)]
    tokens = tokenize(client_for("etl-service", own_vault.address), [(IP, v) for v in values])
    new_dek = admin.rotation("admin:test-kill").rotate_encryption_key("CHG-3")

    def under_new_dek() -> int:
        with psycopg.connect(own_env["PG_ADMIN_DSN"]) as conn:
            row = conn.execute("SELECT count(*) FROM vault.tokens WHERE dek_id = %s", (new_dek,)).fetchone()
        return int(row[0]) if row else 0

    job = _admin(own_env, "reencrypt", "--reason", "CHG-3", "--batch-size", "100")
    deadline = time.monotonic() + 60
    while under_new_dek() < 200:
        assert job.poll() is None, job.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait()
    done_before_kill = under_new_dek()
    assert 0 < done_before_kill < len(values), "the job should have been killed half-way"

    resumed = _admin(own_env, "reencrypt", "--reason", "CHG-3", "--batch-size", "500")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert "re-encrypted" in out
    assert admin.rotation("admin:test-kill").status().rows_to_reencrypt == 0
    with psycopg.connect(own_env["PG_ADMIN_DSN"]) as conn:  # the killed run's intent got its outcome (attack 26, F5)
        outcomes = [
            str(r[0])
            for r in conn.execute(
                "SELECT outcome FROM vault.audit_log WHERE action = 'reencrypt' AND purpose = 'CHG-3' ORDER BY id"
            ).fetchall()
        ]
    assert outcomes[0] == outcomes[2] == INTENT_HELD and outcomes[3].startswith("ok: "), outcomes
    assert outcomes[1].startswith("failed: interrupted, the process ended"), outcomes
    investigator = client_for("fraud-investigator", own_vault.address)
    assert revealed(investigator, tokens[:100] + tokens[-100:], "CASE-AFTER-RESUME") == values[:100] + values[-100:]
