"""Refused reveals and erasures are audited on the real database (DESIGN §1b, README "Audit").

"Every detokenize (allowed or refused) ... is audited": a certificate the policy does not allow
to reveal or erase still leaves a row naming who tried (client, certificate serial and SHA-256),
what (action, token types, how many), with the outcome `refused: PermissionDenied`. Without it
an insider could probe with a certificate of the wrong role and leave no trace. The purpose is
withheld (empty): the refused call opened no value to compare it with, and a purpose naming the
value would stay in the log for good (attack 12, finding 1; test_purpose_refused_calls.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]


def _letters() -> str:
    """A unique purpose suffix of letters only (a purpose with 8 digits in a row is refused)."""
    return "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:10])


def _certificate(stack_env: dict[str, str], client: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((Path(stack_env["STACK_DIR"]) / "certs" / f"{client}.pem").read_bytes())


@pytest.fixture
def tokens(stub_for: StubFor) -> list[str]:
    """Two real tokens, an ip and a device id."""
    column = [
        vault_pb2.ValueColumn(type=vault_pb2.TOKEN_TYPE_IP, values=[f"198.51.100.{uuid.uuid4().int % 250 + 1}"]),
        vault_pb2.ValueColumn(type=vault_pb2.TOKEN_TYPE_DEVICE_ID, values=[f"555-{uuid.uuid4().int % 90 + 10}-0042"]),
    ]
    response = stub_for("etl-service").Tokenize(vault_pb2.TokenizeRequest(columns=column), timeout=10)
    return [c.tokens[0] for c in response.columns]


@pytest.mark.parametrize(
    ("client", "action"),
    [
        ("etl-service", "detokenize"),
        ("privacy-officer", "detokenize"),
        ("etl-service", "erase"),
        ("analyst", "erase"),
        ("fraud-investigator", "erase"),
    ],
)
def test_a_call_the_policy_refuses_is_audited_with_who_what_and_why(
    stack_env: dict[str, str], stub_for: StubFor, tokens: list[str], client: str, action: str
) -> None:
    purpose = f"CASE-{action.upper()}-{_letters()}"
    stub = stub_for(client)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        before = conn.execute("SELECT coalesce(max(id), 0) FROM vault.audit_log").fetchone()
    with pytest.raises(grpc.RpcError) as refused:
        if action == "detokenize":
            stub.Detokenize(vault_pb2.DetokenizeRequest(tokens=tokens, purpose=purpose), timeout=10)
        else:
            stub.Erase(vault_pb2.EraseRequest(tokens=tokens, purpose=purpose), timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT client, client_serial, client_cert_sha256, action, purpose, token_types, item_count, outcome"
            " FROM vault.audit_log WHERE id > %s AND client = %s AND action = %s ORDER BY id",
            (before[0] if before else 0, client, action),
        ).fetchall()
        kept = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose = %s", (purpose,)).fetchone()
    assert kept == (0,), "the refused call's purpose was kept"
    certificate = _certificate(stack_env, client)
    assert rows == [
        (
            client,
            format(certificate.serial_number, "x"),
            certificate.fingerprint(hashes.SHA256()).hex(),
            action,
            "",
            "device_id,ip",
            2,
            "refused: PermissionDenied",
        )
    ]
