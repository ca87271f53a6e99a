"""A stored value altered in the database, as the vault's client sees it (real Postgres, OpenBao).

Each value is sealed with its token and type as associated data, so a ciphertext moved onto
another token does not open. What the caller is told matters: "retry later" (UNAVAILABLE)
sent clients into retries that could never succeed and hid a tampered database; the answer is
DATA_LOSS, saying what happened and whom to tell, and an error in the vault's log without the values.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import grpc
import psycopg
import pytest

from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]


def test_ciphertexts_swapped_by_the_database_owner_are_reported_as_data_loss_not_retry_later(
    stack_env: dict[str, str], stub_for: StubFor, caplog: pytest.LogCaptureFixture
) -> None:
    values = [f"198.18.{uuid.uuid4().int % 250}.{n}" for n in (31, 32)]
    response = stub_for("etl-service").Tokenize(
        vault_pb2.TokenizeRequest(
            items=[vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=v) for v in values]
        ),
        timeout=10,
    )
    token_a, token_b = (r.token for r in response.results)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # the owner bypasses every trigger
        conn.execute(
            "UPDATE vault.tokens t SET sealed = o.sealed FROM vault.tokens o"
            " WHERE (t.token, o.token) IN ((%s, %s), (%s, %s))",
            (token_a, token_b, token_b, token_a),
        )
    with caplog.at_level(logging.ERROR):
        results = (
            stub_for("analyst")
            .Detokenize(vault_pb2.DetokenizeRequest(tokens=[token_a, token_b], purpose="CASE-SWAP-1"), timeout=10)
            .results
        )
    assert [r.WhichOneof("result") for r in results] == ["error", "error"]
    for result in results:
        assert result.error.code == grpc.StatusCode.DATA_LOSS.value[0]
        assert "does not authenticate" in result.error.message and "security team" in result.error.message
    assert "do not authenticate" in caplog.text
    assert not any(v in caplog.text or v in r.error.message for v in values for r in results)
