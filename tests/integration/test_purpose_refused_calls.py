"""A purpose is kept in clear only by a call whose every token was opened and compared with it.

Attack 12, finding 1: the own-value comparison (test_purpose_own_values.py) runs on the values a
call opens. A call refused before opening anything (over its rate limit, not permitted) and a
call naming a token whose value was not opened (erased, unknown, of a type the client may not
see) kept its purpose as given. A privacy officer whose Erase of a person's 101 tokens was
refused over the erase burst, and whose retry succeeded, left `GDPR-2026-801-<device id>` in the
hash-chained audit log for good, next to the successful erasure that withheld it. Such rows now
keep the purpose withheld: empty, as a row whose purpose spells a value of the call does.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
import psycopg
import pytest

from tests.integration.audit_rows import audit_rows_since, last_audit_id
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]
TypedValue = tuple[vault_pb2.TokenType.ValueType, str]

DEVICE, IP_TYPE = vault_pb2.TOKEN_TYPE_DEVICE_ID, vault_pb2.TOKEN_TYPE_IP
ERASE_BURST = 100
"""The stack policy's `erase_burst` ([defaults.limits]): a call naming more tokens is refused whole."""
DETOKENIZE_BURST = 2000
"""The analyst's `detokenize_burst` in the stack policy."""


IP = "203.0.113.7"
"""A documentation address: `INC-cb007107` (its hex form) passes the pattern detectors."""


def _device_id() -> str:
    """A made-up device id of a common shape whose random part is letters only (no number detector fires)."""
    n = uuid.uuid4().int
    return "SM-G991B-" + "".join(chr(ord("A") + (n >> (5 * i)) % 26) for i in range(8))


def _tokenized(stub_for: StubFor, items: list[TypedValue]) -> list[str]:
    """The tokens of (type, value) items, tokenized as the ETL."""
    request = vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=t, value=v) for t, v in items])
    return [str(r.token) for r in stub_for("etl-service").Tokenize(request, timeout=30).results]


def _device_spellings(device: str) -> list[str]:
    """The device id as written, and without its separators (lower case: compared case-insensitively)."""
    folded = device.lower()
    return [folded, folded.replace("-", "")]


def _rows_holding(env: dict[str, str], spellings: list[str]) -> int:
    """How many audit rows (of any client, ever) hold one of `spellings` in their purpose, case-insensitively."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT count(*) FROM vault.audit_log WHERE lower(purpose) LIKE ANY(%s)",
            ([f"%{spelling}%" for spelling in spellings],),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _refusal(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value.code()


def test_an_erasure_refused_over_the_burst_then_retried_leaves_the_device_id_in_no_audit_row(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    device = _device_id()
    ips: list[TypedValue] = [(IP_TYPE, f"198.18.{i // 250}.{i % 250 + 1}") for i in range(ERASE_BURST)]
    items: list[TypedValue] = [(DEVICE, device), *ips]  # a person with more tokens than one erasure may name
    tokens = _tokenized(stub_for, items)
    purpose = f"GDPR-2026-801-{device}"
    officer = stub_for("privacy-officer")
    before = last_audit_id(stack_env)
    over = _refusal(lambda: officer.Erase(vault_pb2.EraseRequest(tokens=tokens, purpose=purpose), timeout=30))
    assert over == grpc.StatusCode.RESOURCE_EXHAUSTED  # nothing opened: opening is what the budget limits
    retried = officer.Erase(vault_pb2.EraseRequest(tokens=tokens[:1], purpose=purpose), timeout=10)
    assert [r.erased for r in retried.results] == [True]
    assert audit_rows_since(stack_env, before, "privacy-officer") == [
        ("erase", "refused: RateLimited", ""),
        ("erase", "ok: 1 erased, 0 not erased", ""),
    ]
    assert _rows_holding(stack_env, _device_spellings(device)) == 0, "an audit row holds the erased device id"


def test_a_retried_erasure_and_a_masked_reveal_of_the_erased_token_keep_no_purpose(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    # Once erased, the value can no longer be opened and compared: any later call naming its token
    # keeps the purpose withheld, whatever the purpose spells.
    device = _device_id()
    (token,) = _tokenized(stub_for, [(DEVICE, device)])
    purpose = f"INC-{device.replace('-', '')}"
    erase = vault_pb2.EraseRequest(tokens=[token], purpose=purpose)
    before = last_audit_id(stack_env)
    assert [r.erased for r in stub_for("privacy-officer").Erase(erase, timeout=10).results] == [True]
    assert [r.erased for r in stub_for("privacy-officer").Erase(erase, timeout=10).results] == [False]  # a retry
    reveal = vault_pb2.DetokenizeRequest(tokens=[token], purpose=purpose)
    (result,) = stub_for("analyst").Detokenize(reveal, timeout=10).results  # device ids masked for the analyst
    assert result.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert audit_rows_since(stack_env, before, "privacy-officer") == [
        ("erase", "ok: 1 erased, 0 not erased", ""),
        ("erase", "ok: 0 erased, 1 not erased", ""),
    ]
    assert audit_rows_since(stack_env, before, "analyst") == [("detokenize", "ok: 0 revealed, 1 refused", "")]
    assert _rows_holding(stack_env, _device_spellings(device)) == 0, "an audit row holds the erased device id"


def test_a_rate_limited_reveal_keeps_no_purpose_it_did_not_compare(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    # `INC-cb007107` is 203.0.113.7 in hex: a reference to the pattern detectors. Refused over the
    # limit, the call opened nothing to compare it with, so the row keeps no purpose.
    (ip_token,) = _tokenized(stub_for, [(IP_TYPE, IP)])
    purpose = "INC-cb007107"
    tokens = [ip_token] * (DETOKENIZE_BURST + 1)
    analyst = stub_for("analyst")
    before = last_audit_id(stack_env)
    over = _refusal(lambda: analyst.Detokenize(vault_pb2.DetokenizeRequest(tokens=tokens, purpose=purpose), timeout=30))
    assert over == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert audit_rows_since(stack_env, before, "analyst") == [("detokenize", "refused: RateLimited", "")]


def test_a_call_refused_as_not_permitted_keeps_no_purpose(stack_env: dict[str, str], stub_for: StubFor) -> None:
    # The privacy officer sees nothing: its Detokenize is refused before any value is opened.
    device = _device_id()
    (token,) = _tokenized(stub_for, [(DEVICE, device)])
    purpose = f"GDPR-2026-801-{device}"
    before = last_audit_id(stack_env)
    request = vault_pb2.DetokenizeRequest(tokens=[token], purpose=purpose)
    refused = _refusal(lambda: stub_for("privacy-officer").Detokenize(request, timeout=10))
    assert refused == grpc.StatusCode.PERMISSION_DENIED
    assert audit_rows_since(stack_env, before, "privacy-officer") == [("detokenize", "refused: PermissionDenied", "")]
    assert _rows_holding(stack_env, _device_spellings(device)) == 0, "an audit row holds the device id"


def test_a_call_whose_every_token_was_opened_and_compared_keeps_its_reference(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    # The rule withholds only what was not compared: an investigator's ordinary reveal and erasure
    # keep their case reference.
    (token,) = _tokenized(stub_for, [(DEVICE, _device_id())])
    before = last_audit_id(stack_env)
    reveal = vault_pb2.DetokenizeRequest(tokens=[token], purpose="CASE-2026-0815")
    assert stub_for("fraud-investigator").Detokenize(reveal, timeout=10).results[0].value.value
    erased = stub_for("privacy-officer").Erase(vault_pb2.EraseRequest(tokens=[token], purpose="GDPR-2026-0815"))
    assert [r.erased for r in erased.results] == [True]
    assert audit_rows_since(stack_env, before, "fraud-investigator") == [
        ("detokenize", "ok: 1 revealed, 0 refused", "CASE-2026-0815")
    ]
    assert audit_rows_since(stack_env, before, "privacy-officer") == [
        ("erase", "ok: 1 erased, 0 not erased", "GDPR-2026-0815")
    ]


def test_a_junk_string_or_a_made_up_token_in_a_call_does_not_blank_its_reference(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    # Review 12, finding 1: neither names a value the purpose could spell, so neither withholds it;
    # else any client could drop its case reference from its own row by adding `x` to a call.
    ip_token, device_token = _tokenized(stub_for, [(IP_TYPE, IP), (DEVICE, _device_id())])
    made_up = "ip_" + uuid.uuid4().hex[:22]
    before = last_audit_id(stack_env)
    reveal = vault_pb2.DetokenizeRequest(tokens=[ip_token, "x", made_up], purpose="CASE-2026-0816")
    results = stub_for("analyst").Detokenize(reveal, timeout=10).results
    assert [r.WhichOneof("result") for r in results] == ["value", "error", "error"]
    erase = vault_pb2.EraseRequest(tokens=[device_token, "x", made_up], purpose="GDPR-2026-0816")
    assert [r.erased for r in stub_for("privacy-officer").Erase(erase, timeout=10).results] == [True, False, False]
    assert audit_rows_since(stack_env, before, "analyst") == [
        ("detokenize", "ok: 1 revealed, 2 refused", "CASE-2026-0816")
    ]
    assert audit_rows_since(stack_env, before, "privacy-officer") == [
        ("erase", "ok: 1 erased, 2 not erased", "GDPR-2026-0816")
    ]
