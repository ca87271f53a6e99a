"""Limits that every client meets, with the shipped policy (config/vault-policy.toml).

DESIGN §1b: analysts, investigators and the privacy officer "reveal or erase per policy,
rate-limited (a default limit for every client: limits fail closed)", and refused calls are
throttled so that no peer can fill the audit log. Each test here is the act an insider holding
one of those certificates would try: irreversible mass erasure, and an audit log flooded by
calls the limits do not count.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import grpc
import psycopg
import pytest

from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]
LARGEST_DEFAULT_BURST = 1000  # [defaults.limits] of the shipped policy: no default lets more through at once


def _codes(call: Callable[[], object], times: int) -> list[grpc.StatusCode]:
    codes = []
    for _ in range(times):
        try:
            call()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
    return codes


def _letters() -> str:
    """A unique purpose suffix of letters only (a purpose with 8 digits in a row is refused)."""
    return "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:8])


def test_the_privacy_officer_cannot_erase_the_vault_in_one_burst(stack_env: dict[str, str], stub_for: StubFor) -> None:
    # A stolen privacy-officer certificate destroys values irreversibly: erasure must be metered
    # like every other reveal or erase (the policy gives the privacy officer no limits of its own).
    prefix = f"10.{uuid.uuid4().int % 250}"
    values = [f"{prefix}.{n // 250}.{n % 250 + 1}" for n in range(5 * LARGEST_DEFAULT_BURST)]
    etl = stub_for("etl-service")
    tokens: list[str] = []
    for start in range(0, len(values), 1000):
        column = vault_pb2.ValueColumn(type=vault_pb2.TOKEN_TYPE_IP, values=values[start : start + 1000])
        tokens += etl.Tokenize(vault_pb2.TokenizeRequest(columns=[column]), timeout=30).columns[0].tokens
    officer = stub_for("privacy-officer")
    purpose = "GDPR-BULK-" + _letters()
    erased = 0
    codes = []
    hints = []
    for start in range(0, len(tokens), 1000):
        try:
            request = vault_pb2.EraseRequest(tokens=tokens[start : start + 1000], purpose=purpose)
            erased += sum(r.erased for r in officer.Erase(request, timeout=30).results)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
            hints += [m.key for m in error.trailing_metadata() or ()]
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, f"{erased} values erased in one burst, nothing refused"
    assert erased <= LARGEST_DEFAULT_BURST, f"{erased} values erased in one burst"
    assert "retry-after-ms" in hints
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        refused = conn.execute(
            "SELECT count(*) FROM vault.audit_log WHERE purpose = %s AND outcome = 'refused: RateLimited'", (purpose,)
        ).fetchone()
    assert refused and refused[0] == codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)  # every refusal audited
    # The privacy officer's real work, one person's few values, is still done.
    request = vault_pb2.EraseRequest(tokens=tokens[-3:], purpose="GDPR-ONE-" + _letters())
    assert [r.erased for r in officer.Erase(request, timeout=10).results] == [True] * 3


def test_calls_with_no_tokens_cannot_flood_the_audit_log(stack_env: dict[str, str], stub_for: StubFor) -> None:
    # Detokenize is metered in tokens, and a call with none takes none from the bucket; yet every
    # call writes an audit row (under the chain's lock). Refused calls are throttled for exactly
    # this reason ("a peer sending refused calls in a loop must not be able to fill the audit log").
    analyst = stub_for("analyst")
    purpose = "FLOOD-" + _letters()
    calls = 3 * LARGEST_DEFAULT_BURST
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        before = conn.execute("SELECT max(id) FROM vault.audit_log").fetchone()
    started = time.monotonic()
    codes = _codes(lambda: analyst.Detokenize(vault_pb2.DetokenizeRequest(purpose=purpose), timeout=10), calls)
    elapsed = time.monotonic() - started
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        # Every row the analyst's calls wrote, whether or not it kept the purpose.
        row = conn.execute(
            "SELECT count(*) FROM vault.audit_log WHERE id > %s AND client = 'analyst' AND action = 'detokenize'",
            (before[0] if before and before[0] is not None else 0,),
        ).fetchone()
    written = row[0] if row else 0
    assert written <= LARGEST_DEFAULT_BURST, f"{written} audit rows written by {calls} empty calls in {elapsed:.1f} s"
    assert grpc.StatusCode.OK not in codes  # refused (and throttled), not answered with one audit row each


def test_calls_without_items_are_refused_saying_what_to_send(stub_for: StubFor) -> None:
    # Erase and Tokenize count items too: a call without any is refused the same way.
    calls: dict[str, Callable[[vault_pb2_grpc.TokenVaultStub], object]] = {
        "etl-service": lambda stub: stub.Tokenize(
            vault_pb2.TokenizeRequest(columns=[vault_pb2.ValueColumn(type=vault_pb2.TOKEN_TYPE_IP)]), timeout=10
        ),
        "privacy-officer": lambda stub: stub.Erase(vault_pb2.EraseRequest(purpose="GDPR-" + _letters()), timeout=10),
        "fraud-investigator": lambda stub: stub.Detokenize(
            vault_pb2.DetokenizeRequest(purpose="CASE-" + _letters(), as_column=True), timeout=10
        ),
    }
    for client, call in calls.items():
        with pytest.raises(grpc.RpcError) as refused:
            call(stub_for(client))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, client
        assert "send at least one" in str(refused.value.details()), client
