"""A session of the serving role holding a client's call budget row cannot freeze that client (attack 27, F8).

vault.take_call_budget locks the client's row of vault.call_budget to the caller's commit; the
serving role may call it. One session that calls it for the fraud investigator's reveals and leaves
its transaction open made every reveal of that client wait past its deadline (each holding a worker
and a connection of the vault), while the others were served. Since migration 0038 the function
waits at most 2 s: the reveal is answered UNAVAILABLE, naming the held budget, within seconds; the
analyst is served meanwhile; once the session lets go, the investigator is served again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import grpc
import psycopg
import pytest

from tests.conftest import RunningVault, stack_identity
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_client import open_channel

StubFor = Callable[[str], object]


def test_a_client_s_budget_row_held_open_makes_its_calls_fail_fast_not_hang(
    stack_env: dict[str, str], vault: RunningVault, stub_for: StubFor
) -> None:
    value = f"198.18.{uuid.uuid4().int % 250}.9"
    item = vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=value)
    token = stub_for("etl-service").Tokenize(vault_pb2.TokenizeRequest(items=[item]), timeout=10).results[0].token  # type: ignore[attr-defined]
    # No transparent retry (client_channel's): each UNAVAILABLE is seen here, not retried by gRPC.
    channel = open_channel(vault.address, stack_identity(stack_env, "fraud-investigator"))
    detokenize = vault_pb2_grpc.TokenVaultStub(channel).Detokenize
    request = vault_pb2.DetokenizeRequest(tokens=[token], purpose="CASE-F8")
    analyst_request = vault_pb2.DetokenizeRequest(tokens=[token], purpose="CASE-F8-ANALYST")

    with psycopg.connect(stack_env["PG_VAULT_DSN"]) as rogue:  # the serving role; a transaction left open
        rogue.execute("SELECT * FROM vault.take_call_budget('fraud-investigator', 'detokenize', 1, 1, 1, 1)")
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            detokenize(request, timeout=10)  # before 0038: DEADLINE_EXCEEDED after 10 s
        failed_after = time.monotonic() - started
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        assert "call budget" in str(refused.value.details())
        assert failed_after < 6  # one wait of 2 s (and a refusal row's append), never a hang
        served = stub_for("analyst").Detokenize(analyst_request, timeout=10)  # type: ignore[attr-defined]
        assert served.results[0].WhichOneof("result") == "value"  # the other clients are served meanwhile
        rogue.rollback()
    answer = detokenize(request, timeout=10)
    assert answer.results[0].value.value == value
    channel.close()
    print(f"\nthe held client's reveal failed after {failed_after:.1f} s")
