"""The privacy officer's Erase over real gRPC, and the erase limit the shipped policy gives it.

Shared by the erase-limit tests. An answer is OK or RESOURCE_EXHAUSTED (the limit); any other
error fails the test at once: a broken Erase must not pass for a refused one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import pytest

from devstack.stack import POLICY_FILE
from tests.conftest import client_channel
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
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
