"""A stored value altered in the database, as the vault's client sees it (real Postgres, OpenBao).

Each value is sealed with its token and type as associated data, so a ciphertext moved onto
another token does not open; and a row found by its fingerprint is opened and compared with the
value asked for before its token is handed out, so a fingerprint moved onto another row does not
re-point a value at another person's token. What the caller is told matters: "retry later" (UNAVAILABLE)
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
from prometheus_client import REGISTRY

from tests.conftest import running_vault
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


def _tokenize_ips(stub: vault_pb2_grpc.TokenVaultStub, values: list[str]) -> list[vault_pb2.TokenizeResult]:
    request = vault_pb2.TokenizeRequest(
        items=[vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=v) for v in values]
    )
    return list(stub.Tokenize(request, timeout=10).results)


def _tokenize_data_loss() -> float:
    labels = {"method": "Tokenize", "code": "DATA_LOSS"}
    return REGISTRY.get_sample_value("tokenvault_grpc_items_total", labels) or 0.0


def _stored_rows(env: dict[str, str]) -> int:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT count(*) FROM vault.tokens").fetchone()
    return int(row[0]) if row else 0


def test_fingerprints_swapped_by_the_database_owner_give_data_loss_not_the_other_persons_token(
    stack_env: dict[str, str], stub_for: StubFor, caplog: pytest.LogCaptureFixture
) -> None:
    # DESIGN §1: one token per (type, value), "returned for every later request of the same
    # value". The associated data binds a ciphertext to its token, but nothing bound the lookup's
    # fingerprint to either: the database owner swaps two rows' fingerprints (no trigger audits
    # it), and once the replica's cache is cold Tokenize(A) answered B's token, silently: A's
    # later events were loaded under B's token, and a reveal of it shows B's value (attack 8, Finding 5).
    values = [f"198.18.{uuid.uuid4().int % 250}.{n}" for n in (41, 42)]
    token_a, token_b = (r.token for r in _tokenize_ips(stub_for("etl-service"), values))
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn, conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE swapped ON COMMIT DROP AS"
            " SELECT token, fingerprint FROM vault.tokens WHERE token IN (%s, %s)",
            (token_a, token_b),
        )
        conn.execute("UPDATE vault.tokens SET fingerprint = NULL WHERE token IN (%s, %s)", (token_a, token_b))
        conn.execute(
            "UPDATE vault.tokens t SET fingerprint = s.fingerprint FROM swapped s"
            " WHERE t.token IN (%s, %s) AND s.token IN (%s, %s) AND s.token <> t.token",
            (token_a, token_b, token_a, token_b),
        )
    rows, lost = _stored_rows(stack_env), _tokenize_data_loss()
    with running_vault(stack_env) as restarted, caplog.at_level(logging.ERROR):  # a cold cache, as after a restart
        results = _tokenize_ips(stub_for("etl-service", restarted.address), values)
    assert results[0].token != token_b, "after the owner swapped fingerprints, Tokenize(A) answered B's token"
    assert [r.WhichOneof("result") for r in results] == ["error", "error"]
    for result in results:
        assert result.error.code == grpc.StatusCode.DATA_LOSS.value[0]
        assert "altered in the database" in result.error.message and "security team" in result.error.message
    assert _stored_rows(stack_env) == rows  # no new token was issued for either value
    assert _tokenize_data_loss() == lost + 2
    assert "do not hold the values asked for" in caplog.text
    assert not any(v in caplog.text or v in r.error.message for v in values for r in results)


def test_a_row_the_owner_points_at_a_new_values_fingerprint_during_its_insert_gives_no_token(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    # The insert path reads back the token of a value another writer stored first. A trigger of
    # the database owner's drops the new value's row and points another person's row at its
    # fingerprint instead: the read-back then found that person's token and handed it out for
    # the new value on its very first Tokenize, with no restart needed.
    other_value, new_value = (f"198.18.{uuid.uuid4().int % 250}.{n}" for n in (51, 52))
    (other,) = _tokenize_ips(stub_for("etl-service"), [other_value])
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin:
        admin.execute(
            "CREATE FUNCTION public.tv_test_repoint() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN"
            f" UPDATE vault.tokens SET fingerprint = NEW.fingerprint WHERE token = '{other.token}';"
            " RETURN NULL; END $$"
        )
        admin.execute(
            "CREATE TRIGGER tv_test_repoint BEFORE INSERT ON vault.tokens"
            " FOR EACH ROW EXECUTE FUNCTION public.tv_test_repoint()"
        )
        try:
            (result,) = _tokenize_ips(stub_for("etl-service"), [new_value])
        finally:
            admin.execute("DROP TRIGGER tv_test_repoint ON vault.tokens")
            admin.execute("DROP FUNCTION public.tv_test_repoint()")
    assert result.token != other.token, "the new value got the other person's token"
    assert result.WhichOneof("result") == "error"
    assert result.error.code == grpc.StatusCode.DATA_LOSS.value[0]
    assert "altered in the database" in result.error.message
