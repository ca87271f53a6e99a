"""Values no earlier test has tokenized, so that a test's token is its own; their tokens, and reveals of them.

The vault gives equal values equal tokens: a test that erases, reveals or counts the audit
rows of a token needs a value nobody else sent. Private-range addresses and made-up device ids
only (no person's value).
"""

from __future__ import annotations

import uuid

from tests.conftest import RunningVault, client_channel, stack_identity
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_client import open_channel


def fresh_value(token_type: vault_pb2.TokenType.ValueType) -> str:
    """A random value of `token_type`: an ip in 10.0.0.0/8, or a device id of the form 123-45-6789."""
    n = uuid.uuid4().int
    if token_type == vault_pb2.TOKEN_TYPE_IP:
        return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250}"
    return f"{n % 1000:03d}-{(n >> 10) % 100:02d}-{(n >> 20) % 10000:04d}"


def issue_fresh_ip(env: dict[str, str], vault: RunningVault) -> tuple[str, str]:
    """A fresh IP address and its token, issued to the ETL's identity by one Tokenize call.

    No retry but gRPC's transparent one (client_channel's): a call the vault refuses fails the test (unlike
    audit_attacks.tokenize_fresh_ip, whose VaultClient retries UNAVAILABLE).
    """
    value = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    request = vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=value)])
    with client_channel(env, vault.address, "etl-service") as channel:
        token = vault_pb2_grpc.TokenVaultStub(channel).Tokenize(request, timeout=10).results[0].token
    return value, token


class Revealer:
    """Detokenize calls of one token for `purpose` as `client`, on a channel of their own.

    No transparent retry (client_channel's): each UNAVAILABLE is seen by the caller, not retried by gRPC.
    `reveal(timeout)` is the value revealed; a refusal raises grpc.RpcError. Close it (or use it in a `with`).
    """

    def __init__(
        self, env: dict[str, str], vault: RunningVault, token: str, purpose: str, client: str = "fraud-investigator"
    ) -> None:
        self._channel = open_channel(vault.address, stack_identity(env, client))
        self._detokenize = vault_pb2_grpc.TokenVaultStub(self._channel).Detokenize
        self._request = vault_pb2.DetokenizeRequest(tokens=[token], purpose=purpose)

    def __call__(self, timeout: float) -> str:
        return str(self._detokenize(self._request, timeout=timeout).results[0].value.value)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Revealer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
