"""A purpose withheld for spelling or naming a value stays withheld on the client's later calls (attack 15, finding 4).

An erasure split into calls, device first: the device call's purpose `GDPR-2026-801-<device id>`
spells its own value and is withheld; once the device is erased nothing in the vault recognizes
that id, so the ip call with the same purpose kept it verbatim for good. The vault now remembers,
per client and in memory, the purposes it withheld so, and withholds the identical purpose again.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable

import psycopg

from tests.integration.audit_rows import audit_rows_since, last_audit_id
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]
DEVICE, IP_TYPE = vault_pb2.TOKEN_TYPE_DEVICE_ID, vault_pb2.TOKEN_TYPE_IP


def _device_id() -> str:
    """A made-up device id of a common shape whose random part is letters only (no number detector fires)."""
    n = uuid.uuid4().int
    return "SM-G991B-" + "".join(chr(ord("A") + (n >> (5 * i)) % 26) for i in range(8))


def _fresh_ip() -> str:
    n = uuid.uuid4().int
    return f"198.18.{n % 250 + 1}.{(n >> 8) % 250 + 1}"


def _tokenized(stub_for: StubFor, items: list[tuple[vault_pb2.TokenType.ValueType, str]]) -> list[str]:
    request = vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=t, value=v) for t, v in items])
    return [str(r.token) for r in stub_for("etl-service").Tokenize(request, timeout=30).results]


def _rows_holding(env: dict[str, str], text: str) -> int:
    """How many audit rows (of any client, ever) hold `text` in their purpose, case-insensitively."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT count(*) FROM vault.audit_log WHERE lower(purpose) LIKE %s", (f"%{text.lower()}%",)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_an_erasure_split_device_first_leaves_the_device_id_in_no_audit_row(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    device = _device_id()
    ip_token, device_token = _tokenized(stub_for, [(IP_TYPE, _fresh_ip()), (DEVICE, device)])
    purpose = f"GDPR-2026-801-{device}"
    officer = stub_for("privacy-officer")
    before = last_audit_id(stack_env)
    first = officer.Erase(vault_pb2.EraseRequest(tokens=[device_token], purpose=purpose), timeout=10)
    second = officer.Erase(vault_pb2.EraseRequest(tokens=[ip_token], purpose=purpose), timeout=10)
    assert [r.erased for r in (*first.results, *second.results)] == [True, True]
    assert audit_rows_since(stack_env, before, "privacy-officer") == [
        ("erase", "ok: 1 erased, 0 not erased", ""),  # spells its own value: withheld, and remembered
        ("erase", "ok: 1 erased, 0 not erased", ""),  # the device is gone: withheld as remembered
    ]
    assert _rows_holding(stack_env, device) == 0, "an audit row holds the erased device id"


def test_a_withheld_purpose_is_remembered_for_its_client_only(stack_env: dict[str, str], stub_for: StubFor) -> None:
    # An erasure of an ip with the ip's hex number in the purpose: withheld, and remembered for the
    # officer (its later erasure of a device with that purpose is withheld too), not for another
    # client, whose identical reference is kept (a number reading is never looked up among stored
    # values): remembered for all, one client's withhold would blank every client's reference.
    ip = _fresh_ip()
    ip_token, device_token, other_device = _tokenized(
        stub_for, [(IP_TYPE, ip), (DEVICE, _device_id()), (DEVICE, _device_id())]
    )
    purpose = f"INC-{socket.inet_aton(ip).hex()}"
    officer = stub_for("privacy-officer")
    before = last_audit_id(stack_env)
    for token in (ip_token, device_token):
        (erased,) = officer.Erase(vault_pb2.EraseRequest(tokens=[token], purpose=purpose), timeout=10).results
        assert erased.erased
    reveal = vault_pb2.DetokenizeRequest(tokens=[other_device], purpose=purpose)
    (result,) = stub_for("fraud-investigator").Detokenize(reveal, timeout=10).results
    assert result.WhichOneof("result") == "value"
    assert audit_rows_since(stack_env, before, "privacy-officer") == [("erase", "ok: 1 erased, 0 not erased", "")] * 2
    assert audit_rows_since(stack_env, before, "fraud-investigator") == [
        ("detokenize", "ok: 1 revealed, 0 refused", purpose)
    ]
