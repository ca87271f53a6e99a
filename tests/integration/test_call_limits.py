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


def test_the_privacy_officer_cannot_erase_the_vault_in_one_burst(stub_for: StubFor) -> None:
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
    erased = 0
    codes = []
    for start in range(0, len(tokens), 1000):
        try:
            request = vault_pb2.EraseRequest(tokens=tokens[start : start + 1000], purpose="GDPR-BULK")
            erased += sum(r.erased for r in officer.Erase(request, timeout=30).results)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, f"{erased} values erased in one burst, nothing refused"
    assert erased < len(tokens)


def test_calls_with_no_tokens_cannot_flood_the_audit_log(stack_env: dict[str, str], stub_for: StubFor) -> None:
    # Detokenize is metered in tokens, and a call with none takes none from the bucket; yet every
    # call writes an audit row (under the chain's lock). Refused calls are throttled for exactly
    # this reason ("a peer sending refused calls in a loop must not be able to fill the audit log").
    analyst = stub_for("analyst")
    purpose = "FLOOD-" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:8])
    calls = 3 * LARGEST_DEFAULT_BURST
    started = time.monotonic()
    codes = _codes(lambda: analyst.Detokenize(vault_pb2.DetokenizeRequest(purpose=purpose), timeout=10), calls)
    elapsed = time.monotonic() - started
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose = %s", (purpose,)).fetchone()
    written = row[0] if row else 0
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes or written <= LARGEST_DEFAULT_BURST, (
        f"{written} audit rows written by {calls} empty calls in {elapsed:.1f} s, none refused"
    )
