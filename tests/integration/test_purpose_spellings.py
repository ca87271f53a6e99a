"""Purposes that still carry an address or an id number after the 3 Dec filter fix (second insider round).

docs/threat-model.md: "a purpose carrying an IP, a token, an e-mail, a MAC or an
identifier-like number is refused and not stored" - the audit log is append-only, so what it
stores outlives any erasure. Each purpose below shows (or reads aloud) as 203.0.113.7 or
593-47-5928 and is stored by the real vault.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import psycopg
import pytest

from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]

_INVISIBLE = "\ufe0f"  # VARIATION SELECTOR-16: printable, renders as nothing after a digit


@pytest.mark.parametrize(
    "purpose",
    [
        "re 203.0.1" + _INVISIBLE * 4 + "13.7",  # displays exactly as the address
        "re 593-4" + _INVISIBLE + "7-5928",  # displays exactly as the id number
        "re 203.0.1" + "\u034f" * 4 + "13.7",  # COMBINING GRAPHEME JOINER, invisible too
        "re 203....0....113....7",  # four separators instead of up to three
        "re 593----47----5928",
        "re 203 dot 0 dot 113 dot 7",  # words as separators
        "re 203o0o113o7",  # letters as separators
        "re 0xcb.0x0.0x71.0x7",  # dotted hex, which inet_aton and browsers read as the address
    ],
)
def test_a_purpose_spelling_an_address_or_id_around_the_filter_is_refused_and_not_stored(
    stack_env: dict[str, str], stub_for: StubFor, purpose: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stub_for("analyst").Detokenize(
            vault_pb2.DetokenizeRequest(tokens=["ip_" + "Q" * 22], purpose=purpose), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        stored = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose = %s", (purpose,)).fetchone()
    assert stored == (0,)
