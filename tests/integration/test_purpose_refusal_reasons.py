"""Over gRPC, every refusal of a purpose names the kind of value it holds and asks for the case reference.

Detokenize and Erase take a purpose (Tokenize takes none). A purpose is refused either by its
shape, whatever the call's values (`check_purpose`: INVALID_ARGUMENT, before anything is opened),
or because it spells a value the Detokenize reveals in plain (`PurposeHoldsOwnValue`:
INVALID_ARGUMENT, after the values were compared). `GDPR-2026-801-SM-G991B-ATK8Q7ZX` was refused
by both with "it holds an IP address" (its digits 801, 991, 8, 7 read broadly as an address); a
spelled device id was refused as "a value this call reveals", without saying which. The refusals
now say device id or IP address, end in the case reference alone, and never quote the value.
Against the real vault (tests/conftest.py's stack).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
import pytest

from tests.integration.audit_rows import audit_rows_since, last_audit_id
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]

IP = "203.0.113.7"
SERIAL_DEVICE = "SM-G991B-ATK8Q7ZX"
"""The closing note's device id: its digits read as four numbers close together."""
INSTEAD = "give the case or ticket reference alone, such as inc-4821"


def _fresh_letters_device() -> str:
    """A made-up device id whose random part is letters only: no shape detector refuses it in a purpose."""
    n = uuid.uuid4().int
    return "SM-G991B-" + "".join(chr(ord("A") + (n >> (5 * i)) % 26) for i in range(8))


def _tokens(stub_for: StubFor, ip: str, device: str) -> list[str]:
    """The tokens of `ip` and `device`, tokenized as the ETL does."""
    items = [
        vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=ip),
        vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_DEVICE_ID, value=device),
    ]
    results = stub_for("etl-service").Tokenize(vault_pb2.TokenizeRequest(items=items), timeout=10).results
    return [result.token for result in results]


def _refusal(call: Callable[[], object], *values: str) -> str:
    """The details of the INVALID_ARGUMENT refusal of `call` (lower case), checked to quote none of `values`."""
    with pytest.raises(grpc.RpcError) as refused:
        call()
    details = (refused.value.details() or "").lower()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, details
    assert not any(value.lower() in details for value in values), "the refusal quotes a value"
    assert INSTEAD in details, details
    return details


@pytest.mark.parametrize(
    ("client", "action"), [("fraud-investigator", "detokenize"), ("privacy-officer", "erase")], ids=["reveal", "erase"]
)
def test_a_purpose_holding_a_device_id_is_refused_as_one_not_as_an_ip_address(
    stack_env: dict[str, str], stub_for: StubFor, client: str, action: str
) -> None:
    tokens = _tokens(stub_for, IP, SERIAL_DEVICE)
    purpose = f"GDPR-2026-801-{SERIAL_DEVICE}"
    stub = stub_for(client)
    before = last_audit_id(stack_env)
    if action == "detokenize":
        call: Callable[[], object] = lambda: stub.Detokenize(  # noqa: E731
            vault_pb2.DetokenizeRequest(tokens=tokens, purpose=purpose), timeout=10
        )
    else:
        call = lambda: stub.Erase(vault_pb2.EraseRequest(tokens=tokens, purpose=purpose), timeout=10)  # noqa: E731
    details = _refusal(call, SERIAL_DEVICE, "g991b", "atk8q7zx")
    assert "device id" in details and "ip address" not in details, details
    assert audit_rows_since(stack_env, before, client) == [(action, "refused: InvalidRequest", "")]


@pytest.mark.parametrize(
    ("spell", "kind"),
    [
        (lambda device: f"GDPR-2026-801-{device}", "the device id"),
        (lambda device: f"INC-{device.replace('-', '').lower()}", "the device id"),
        (lambda device: "INC-cb007107", "the ip address"),  # 203.0.113.7 in hex
    ],
    ids=["device id as written", "device id compact", "ip in hex"],
)
def test_a_purpose_spelling_a_value_revealed_in_plain_is_told_which_kind_it_spells(
    stack_env: dict[str, str], stub_for: StubFor, spell: Callable[[str], str], kind: str
) -> None:
    device = _fresh_letters_device()
    tokens = _tokens(stub_for, IP, device)
    request = vault_pb2.DetokenizeRequest(tokens=tokens, purpose=spell(device))
    before = last_audit_id(stack_env)
    details = _refusal(lambda: stub_for("fraud-investigator").Detokenize(request, timeout=10), device, IP)
    assert f"purpose must not contain {kind} this call reveals in plain" in details, details
    other = "the ip address" if kind == "the device id" else "the device id"
    assert other not in details, details
    rows = audit_rows_since(stack_env, before, "fraud-investigator")
    assert rows == [("detokenize", "refused: PurposeHoldsOwnValue", "")]
