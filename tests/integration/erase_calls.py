"""The privacy officer's Erase over real gRPC, and the erase limit the shipped policy gives it.

Shared by the erase-limit tests. An answer is OK or RESOURCE_EXHAUSTED (the limit); any other
error fails the test at once: a broken Erase must not pass for a refused one. And an erasure run in the
background while a row it erases is held, for the tests of what it does with its budget when it fails.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import psycopg
import pytest

from devstack.stack import POLICY_FILE
from tests.conftest import client_channel
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_client import VaultClient, VaultClientError
from vault_service.domain.policy import load_policy

SHIPPED_ERASE_LIMIT = load_policy(POLICY_FILE).permissions("privacy-officer").limits.erase
"""What config/vault-policy.toml (the policy of every stack the tests start) lets the privacy officer erase."""

DOCUMENTED_ERASE_BURST = 100
"""docs/threat-model.md, README: "100 tokens at once ..., then 18 an hour"."""


@dataclass(frozen=True)
class EraseAnswer:
    """One Erase call: its status, how many values it erased, the names of its trailing metadata."""

    code: grpc.StatusCode
    erased: int
    hints: tuple[str, ...] = ()


def letters() -> str:
    """A unique purpose suffix of letters only (a purpose with 8 digits in a row is refused)."""
    return "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:8])


@contextmanager
def stub_as(env: dict[str, str], address: str, client: str) -> Iterator[vault_pb2_grpc.TokenVaultStub]:
    """A stub presenting the stack certificate of `client`, closed on exit."""
    channel = client_channel(env, address, client)
    try:
        yield vault_pb2_grpc.TokenVaultStub(channel)
    finally:
        channel.close()


def new_ip_tokens(env: dict[str, str], address: str, count: int) -> list[str]:
    """`count` tokens of new ip values, issued to the ETL."""
    prefix = f"10.{uuid.uuid4().int % 250}"
    values = [f"{prefix}.{n // 250}.{n % 250 + 1}" for n in range(count)]
    tokens: list[str] = []
    with stub_as(env, address, "etl-service") as etl:
        for start in range(0, count, 1000):
            column = vault_pb2.ValueColumn(type=vault_pb2.TOKEN_TYPE_IP, values=values[start : start + 1000])
            tokens += etl.Tokenize(vault_pb2.TokenizeRequest(columns=[column]), timeout=30).columns[0].tokens
    return tokens


def erase(stub: vault_pb2_grpc.TokenVaultStub, tokens: list[str], purpose: str) -> EraseAnswer:
    """Erase `tokens`: erased, or refused by the limit; any other outcome fails the test."""
    try:
        response = stub.Erase(vault_pb2.EraseRequest(tokens=tokens, purpose=purpose), timeout=30)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            pytest.fail(f"Erase failed with {error.code()}, not the erase limit: {error.details()}")
        return EraseAnswer(error.code(), 0, tuple(m.key for m in error.trailing_metadata() or ()))
    failed = [r.error.message for r in response.results if not r.erased]
    assert not failed, f"Erase answered OK but did not erase {len(failed)} values: {failed[:3]}"
    return EraseAnswer(grpc.StatusCode.OK, len(response.results))


def officer_erase_budget_left(env: dict[str, str]) -> float:
    """The privacy officer's erase budget left, read as the database's owner; a full one while it has no row yet."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT tokens FROM vault.call_budget WHERE client = 'privacy-officer' AND kind = 'erase'"
        ).fetchone()
    return float(SHIPPED_ERASE_LIMIT.burst) if row is None else float(row[0])


def erasing_in_background(
    officer: VaultClient, tokens: list[str], purpose: str, env: dict[str, str]
) -> tuple[threading.Thread, list[VaultClientError | None]]:
    """The officer's erasure of `tokens` in a thread, returned once it took its budget (the test holds a row).

    With the thread, the list its end is appended to: None (erased) or the VaultClientError it ended with. Fails
    the test when the budget was not taken within 10 s.
    """
    ended: list[VaultClientError | None] = []

    def erase() -> None:
        try:
            officer.erase(tokens, purpose)
            ended.append(None)
        except VaultClientError as error:
            ended.append(error)

    erasing = threading.Thread(target=erase, daemon=True)
    erasing.start()
    deadline = time.monotonic() + 10
    # Half its tokens gone from the budget: taken (the refill, 18 an hour, moves it by hundredths meanwhile).
    while officer_erase_budget_left(env) > SHIPPED_ERASE_LIMIT.burst - len(tokens) / 2:
        assert time.monotonic() < deadline, "the erasure never took its budget"
        time.sleep(0.02)
    return erasing, ended
