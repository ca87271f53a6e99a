"""An erasure the database owner undoes in the live vault is refused, not revealed (attack 41, A41-2).

The owner can write an erased token's `sealed` bytes back (and its fingerprint: both are in any base
backup), leaving `erased_at` set - reconciliation in `audit verify` reads `erased_at`. The vault reads
`erased_at` with the row (the same query): a row erased yet holding a value answers DATA_LOSS, saying
to report it, never the value, and Tokenize never hands the erased token out again (row 13: "the same
value later gets a new, unlinkable token"). Logged with the token's audit hash, never a value; counted.
Real OpenBao and PostgreSQL, the in-process vault over gRPC.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import grpc
import psycopg
import pytest

from tests.integration.erase_calls import letters
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from vault_service.service.revealing import erased_values_present

StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]
DATA_LOSS = grpc.StatusCode.DATA_LOSS.value[0]


def _tokenized(stub: vault_pb2_grpc.TokenVaultStub, values: list[str]) -> list[vault_pb2.TokenizeResult]:
    items = [vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=v) for v in values]
    return list(stub.Tokenize(vault_pb2.TokenizeRequest(items=items), timeout=10).results)


def _revealed(stub_for: StubFor, tokens: list[str]) -> list[vault_pb2.DetokenizeResult]:
    request = vault_pb2.DetokenizeRequest(tokens=tokens, purpose="CASE-A41-UNDO")
    return list(stub_for("fraud-investigator").Detokenize(request, timeout=10).results)


def _erased_and_written_back(env: dict[str, str], stub_for: StubFor, tokens: list[str], columns: str) -> None:
    """The officer erases `tokens`; the owner then writes `columns` back as they were (erased_at stays set)."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as owner:  # what a base backup holds: bytes, no value, no key
        kept = owner.execute(f"SELECT token, {columns} FROM vault.tokens WHERE token = ANY(%s)", (tokens,)).fetchall()
    assert len(kept) == len(tokens)
    request = vault_pb2.EraseRequest(tokens=tokens, purpose=f"GDPR-A41-{letters()}")
    answer = stub_for("privacy-officer").Erase(request, timeout=10)
    assert [r.erased for r in answer.results] == [True] * len(tokens)
    assert [r.error.code for r in _revealed(stub_for, tokens)] == [grpc.StatusCode.NOT_FOUND.value[0]] * len(tokens)
    sets = ", ".join(f"{c.strip()} = %s" for c in columns.split(","))
    with psycopg.connect(env["PG_ADMIN_DSN"]) as owner:
        for token, *values in kept:
            owner.execute(f"UPDATE vault.tokens SET {sets} WHERE token = %s", (*values, token))
        (still,) = owner.execute(
            "SELECT count(*) FROM vault.tokens WHERE token = ANY(%s) AND erased_at IS NOT NULL", (tokens,)
        ).fetchone() or (0,)
    assert still == len(tokens)


def test_an_erased_value_the_owner_writes_back_is_refused_as_data_loss_not_revealed(
    stack_env: dict[str, str], stub_for: StubFor, caplog: pytest.LogCaptureFixture
) -> None:
    values = [f"198.18.{uuid.uuid4().int % 250}.{n}" for n in (61, 62)]
    tokens = [r.token for r in _tokenized(stub_for("etl-service"), values)]
    assert [r.value.value for r in _revealed(stub_for, tokens)] == values
    _erased_and_written_back(stack_env, stub_for, tokens, "sealed")
    counted = erased_values_present()
    with caplog.at_level(logging.ERROR):
        results = _revealed(stub_for, tokens)
    assert [r.WhichOneof("result") for r in results] == ["error", "error"], "the erased values were revealed again"
    for result in results:
        assert result.error.code == DATA_LOSS
        assert "erased token is present again" in result.error.message and "security team" in result.error.message
    assert erased_values_present() == counted + 2
    assert "erasure was undone in the database" in caplog.text
    assert not any(v in caplog.text or t in caplog.text for v, t in zip(values, tokens, strict=True))


def test_an_erased_row_the_owner_puts_back_whole_never_gives_its_token_to_the_same_value_again(
    stack_env: dict[str, str], stub_for: StubFor, caplog: pytest.LogCaptureFixture
) -> None:
    values = [f"198.18.{uuid.uuid4().int % 250}.{n}" for n in (71, 72)]
    tokens = [r.token for r in _tokenized(stub_for("etl-service"), values)]
    _erased_and_written_back(stack_env, stub_for, tokens, "sealed, fingerprint")
    counted = erased_values_present()
    with caplog.at_level(logging.ERROR):
        results = _tokenized(stub_for("etl-service"), values)  # the person's next login
    assert not {r.token for r in results} & set(tokens), "Tokenize handed the erased tokens out again"
    assert [r.error.code for r in results] == [DATA_LOSS, DATA_LOSS]
    assert all("erased token is present again" in r.error.message for r in results)
    assert erased_values_present() == counted + 2
    assert not any(v in caplog.text or t in caplog.text for v, t in zip(values, tokens, strict=True))
    assert [r.error.code for r in _revealed(stub_for, tokens)] == [DATA_LOSS, DATA_LOSS]
