"""The vault process SIGKILLed while it writes tokens, and while it re-indexes (chaos 50, held).

Real OpenBao and PostgreSQL, `python -m vault_service` in a process of its own on a database of the
test's own. What the ETL relies on: a value has one token, and every token a caller was given stays
its value's token - after a kill -9 in the middle of Tokenize batches of new values (the same values
sent by two callers at once), and after a kill -9 in each phase of a fingerprint-key re-index while
the ETL tokenizes (re-run, it resumes and finishes; the tokens stay).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devstack.procs import stop_pid
from tests.conftest import stack_identity
from tests.integration.conftest import start_vault_process
from tests.integration.own_database import database_of_its_own
from tokenvault_client import TokenType, VaultClient, VaultClientError

IP = TokenType.IP


@pytest.fixture
def own_env(stack_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    with database_of_its_own(stack_env, "killed", migrated=True, checkpoint_file=tmp_path / "cp.jsonl") as env:
        yield env


def _values(count: int) -> list[str]:
    """`count` private addresses no other test of this database sends."""
    base = uuid.uuid4().int % 200 + 20
    return [f"10.{(base + n // 65536) % 256}.{n // 256 % 256}.{n % 256}" for n in range(count)]


def _tokens_of(env: dict[str, str], address: str, values: list[str]) -> list[str]:
    with VaultClient.connect(address, stack_identity(env, "etl-service")) as etl:
        tokens = etl.tokenize([(IP, v) for v in values])
    assert all(isinstance(t, str) for t in tokens)
    return [str(t) for t in tokens]


def _one_row_per_value(env: dict[str, str]) -> None:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        rows, values = conn.execute(
            "SELECT count(*), count(DISTINCT coalesce(next_fingerprint, fingerprint)) FROM vault.tokens"
        ).fetchone() or (0, 0)
    assert rows == values


def test_a_kill_mid_tokenize_leaves_one_token_per_value_and_every_token_given_its_values(
    own_env: dict[str, str], tmp_path: Path
) -> None:
    values = _values(200_000)
    address, pid = start_vault_process(own_env, tmp_path / "vault.log")
    given: list[tuple[str, str]] = []
    lock = threading.Lock()

    def caller(slice_number: int) -> None:  # two callers per slice: the same new values at once
        with VaultClient.connect(address, stack_identity(own_env, "etl-service")) as etl:
            for start in range(slice_number * 1000, len(values), 4000):
                part = values[start : start + 1000]
                try:
                    tokens = etl.tokenize([(IP, v) for v in part])
                except VaultClientError:
                    return  # the vault is gone
                with lock:
                    given.extend((v, str(t)) for v, t in zip(part, tokens, strict=True))

    callers = [threading.Thread(target=caller, args=(n % 4,)) for n in range(8)]
    try:
        for thread in callers:
            thread.start()
        time.sleep(2.0)
        os.kill(pid, signal.SIGKILL)
        for thread in callers:
            thread.join()
    finally:
        stop_pid(pid)
    assert 0 < len({v for v, _ in given}) < len(values), "the kill did not land mid-run"
    by_value: dict[str, set[str]] = {}
    for value, token in given:
        by_value.setdefault(value, set()).add(token)
    assert all(len(tokens) == 1 for tokens in by_value.values()), "two callers got two tokens for one value"
    address, pid = start_vault_process(own_env, tmp_path / "vault-again.log")
    try:
        asked = list(by_value)
        again = _tokens_of(own_env, address, asked)
        assert [by_value[v] for v in asked] == [{t} for t in again], "a token given before the kill changed"
    finally:
        stop_pid(pid)
    _one_row_per_value(own_env)


@pytest.mark.parametrize("phase", ["reindex", "verify", "compact"])
def test_a_kill_in_each_phase_of_a_reindex_changes_no_token_and_the_rerun_finishes(
    own_env: dict[str, str], tmp_path: Path, phase: str
) -> None:
    values = _values(24_000)
    address, pid = start_vault_process(own_env, tmp_path / "vault.log")
    late: list[tuple[str, str]] = []
    stop = threading.Event()

    def etl_meanwhile() -> None:  # new values while the job runs: written with their next fingerprint
        with VaultClient.connect(address, stack_identity(own_env, "etl-service")) as etl:
            for start in range(20_000, len(values), 200):
                if stop.is_set():
                    return
                part = values[start : start + 200]
                try:
                    tokens = etl.tokenize([(IP, v) for v in part])
                except VaultClientError:
                    return
                late.extend((v, str(t)) for v, t in zip(part, tokens, strict=True))

    try:
        tokens = _tokens_of(own_env, address, values[:20_000])
        with VaultClient.connect(address, stack_identity(own_env, "security-team")) as team:
            team.key_commands().rotate_fingerprint_key("CHG-5001")
            meanwhile = threading.Thread(target=etl_meanwhile)
            meanwhile.start()
            killed_in = ""
            try:
                for update in team.key_job("reindex", "CHG-5001", 100):
                    if update.phase == phase:
                        os.kill(pid, signal.SIGKILL)
                        killed_in = update.phase
                        break
            finally:
                stop.set()
                meanwhile.join()
    finally:
        stop_pid(pid)
    assert killed_in == phase, "the job ended before the phase it was to be killed in"
    address, pid = start_vault_process(own_env, tmp_path / "vault-again.log")
    try:
        assert _tokens_of(own_env, address, values[:20_000]) == tokens
        assert _tokens_of(own_env, address, [v for v, _ in late]) == [t for _, t in late]
        with VaultClient.connect(address, stack_identity(own_env, "security-team")) as team:
            assert list(team.key_job("reindex", "CHG-5002", 1000))[-1].finished  # resumed and done
        assert _tokens_of(own_env, address, values[:20_000]) == tokens
        assert _tokens_of(own_env, address, [v for v, _ in late]) == [t for _, t in late]
    finally:
        stop_pid(pid)
    _one_row_per_value(own_env)
