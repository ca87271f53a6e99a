"""A session of the serving role holding a client's call budget row cannot freeze that client (attack 27, F8).

vault.take_call_budget locks the client's row of vault.call_budget to the caller's commit; the
serving role may call it. One session that called it for a client and left its transaction open
made every call of that client wait past its deadline (each holding a worker and a connection of
the vault), while the others were served. Since migration 0038 the function waits at most 2 s: the
call is answered UNAVAILABLE, naming the held budget, within seconds; the ETL is served meanwhile;
once the session lets go, the client is answered at once again. The privacy officer's erasures are
the client here: their budget is taken from the row on every call (reveals spend leases a process
may already hold, so they need not touch the row).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import grpc
import psycopg
import pytest

from tests.conftest import RunningVault, stack_identity
from tests.integration.fresh_values import issue_fresh_ip
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_client import open_channel

StubFor = Callable[[str], object]


def test_a_client_s_budget_row_held_open_makes_its_calls_fail_fast_not_hang(
    stack_env: dict[str, str], vault: RunningVault, stub_for: StubFor
) -> None:
    # The erase budget: taken from the row on every call (reveals spend leases a process already holds).
    tokens = [issue_fresh_ip(stack_env, vault)[1] for _ in range(2)]
    # No transparent retry (client_channel's): each UNAVAILABLE is seen here, not retried by gRPC.
    channel = open_channel(vault.address, stack_identity(stack_env, "privacy-officer"))
    erase = vault_pb2_grpc.TokenVaultStub(channel).Erase

    with psycopg.connect(stack_env["PG_VAULT_DSN"]) as rogue:  # the serving role; a transaction left open
        rogue.execute("SELECT * FROM vault.take_call_budget('privacy-officer', 'erase', 1, 1, 1, 1)")
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            erase(vault_pb2.EraseRequest(tokens=tokens[:1], purpose="GDPR-2026-F8"), timeout=10)  # before 0038: 10 s
        failed_after = time.monotonic() - started
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        assert "call budget" in str(refused.value.details())
        assert failed_after < 6  # one wait of 2 s (and a refusal row's append), never a hang
        item = vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=f"198.18.13.{uuid.uuid4().int % 250}")
        served = stub_for("etl-service").Tokenize(vault_pb2.TokenizeRequest(items=[item]), timeout=10)  # type: ignore[attr-defined]
        assert served.results[0].token  # the other clients are served meanwhile
        rogue.rollback()
    try:  # let go: answered at once again (erased, or over its erase budget after the other tests)
        erase(vault_pb2.EraseRequest(tokens=tokens[1:], purpose="GDPR-2026-F8"), timeout=10)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    channel.close()
    print(f"\nthe held client's erasure failed after {failed_after:.1f} s")
