"""Limits that every client meets, with the shipped policy (config/vault-policy.toml).

DESIGN §1b: analysts, investigators and the privacy officer "reveal or erase per policy,
rate-limited (a default limit for every client: limits fail closed)", and refused calls are
throttled so that no peer can fill the audit log. Each test here is the act an insider holding
one of those certificates would try: irreversible mass erasure, and an audit log flooded by
calls the limits do not count.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import psycopg
import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import own_database
from tests.integration.erase_calls import (
    DOCUMENTED_ERASE_BURST,
    SHIPPED_ERASE_LIMIT,
    EraseAnswer,
    erase,
    letters,
    new_ip_tokens,
    stub_as,
)
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

__all__ = ["own_database"]  # fixture used here, defined beside the audit tests

StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]
LARGEST_DEFAULT_BURST = 1000  # [defaults.limits] of the shipped policy: no default lets more through at once
# (the erase test uses the erase burst itself: 100, a tenth of this)


def _codes(call: Callable[[], object], times: int) -> list[grpc.StatusCode]:
    codes = []
    for _ in range(times):
        try:
            call()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
    return codes


def test_the_privacy_officer_cannot_erase_the_vault_in_one_burst(own_database: dict[str, str]) -> None:
    # A stolen privacy-officer certificate destroys values irreversibly: erasure must be metered
    # like every other reveal or erase (the policy gives the privacy officer no limits of its own).
    # On a database of the test's own: its erase budget starts full whatever ran before, and
    # draining it leaves the session's privacy officer its own.
    burst = SHIPPED_ERASE_LIMIT.burst
    assert burst == DOCUMENTED_ERASE_BURST  # README / threat model: "100 tokens at once, then 18 an hour"
    purpose = "GDPR-BULK-" + letters()
    with running_vault(own_database) as vault, stub_as(own_database, vault.address, "privacy-officer") as officer:
        tokens = new_ip_tokens(own_database, vault.address, 5 * burst)
        # The wipe in calls of 1000: each is over the burst, refused whole with a retry hint.
        bulk = [erase(officer, tokens[start : start + 1000], purpose) for start in range(0, len(tokens), 1000)]
        assert [a.code for a in bulk] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * len(bulk)
        assert all("retry-after-ms" in a.hints for a in bulk)
        # The privacy officer's real work, one person's few values, is still done.
        one_person = erase(officer, tokens[-3:], "GDPR-ONE-" + letters())
        assert one_person == EraseAnswer(grpc.StatusCode.OK, 3)
        # The wipe split into calls the burst admits: erasures go on up to the burst, then stop.
        split: list[EraseAnswer] = []
        for token in tokens[: burst + 10]:
            split.append(erase(officer, [token], purpose))
            if [a.code for a in split].count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 3:
                break
    erased = one_person.erased + sum(a.erased for a in split)
    assert erased == burst, f"{erased} values erased in one burst (shipped burst {burst})"
    codes = [a.code for a in bulk + split]
    assert [a.code for a in split] == [grpc.StatusCode.OK] * (burst - 3) + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
    assert all("retry-after-ms" in a.hints for a in split if a.code != grpc.StatusCode.OK)
    with psycopg.connect(own_database["PG_ADMIN_DSN"]) as conn:
        gone = conn.execute("SELECT count(*) FROM vault.tokens WHERE erased_at IS NOT NULL").fetchone()
        refused = conn.execute(
            "SELECT count(*) FROM vault.audit_log WHERE client = 'privacy-officer' AND action = 'erase'"
            " AND outcome = 'refused: RateLimited' AND purpose = ''"  # withheld: nothing was compared with it
        ).fetchone()
        kept = conn.execute(
            "SELECT count(*) FROM vault.audit_log WHERE purpose = %s AND outcome LIKE 'refused%%'", (purpose,)
        ).fetchone()
    assert gone == (burst,)  # in the table too, not just in the answers
    assert refused and refused[0] == codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)  # every refusal audited
    assert kept == (0,)


def test_calls_with_no_tokens_cannot_flood_the_audit_log(stack_env: dict[str, str], stub_for: StubFor) -> None:
    # Detokenize is metered in tokens, and a call with none takes none from the bucket; yet every
    # call writes an audit row (under the chain's lock). Refused calls are throttled for exactly
    # this reason ("a peer sending refused calls in a loop must not be able to fill the audit log").
    analyst = stub_for("analyst")
    purpose = "FLOOD-" + letters()
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
        "privacy-officer": lambda stub: stub.Erase(vault_pb2.EraseRequest(purpose="GDPR-" + letters()), timeout=10),
        "fraud-investigator": lambda stub: stub.Detokenize(
            vault_pb2.DetokenizeRequest(purpose="CASE-" + letters(), as_column=True), timeout=10
        ),
    }
    for client, call in calls.items():
        with pytest.raises(grpc.RpcError) as refused:
            call(stub_for(client))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, client
        assert "send at least one" in str(refused.value.details()), client
