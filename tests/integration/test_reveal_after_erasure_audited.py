"""`audit verify` fails, and who-saw marks the line, on a reveal after an erasure of the same token (attack 41, A41-2).

The database owner undoes an erasure (clears `erased_at`, writes `sealed` back from a backup), lets a reveal
happen, then puts the erased state back as it was (`erased_at` as the erasure set it, `sealed` cleared): erase
reconciliation is satisfied and the vault refuses later reveals, but the reveal's audit row stays in the chain.
Reveal and erase rows both carry the token's keyed hash, so verification sets them against each other: a
served reveal naming a token an earlier erase record named is a finding. The commands themselves run here
(`audit_report_cli`, with their own wiring as on a vault pod), on real Postgres and OpenBao.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.conftest import stack_identity, vault_clients
from tests.integration.audit_attacks import (
    Anchored,
    anchored,
    as_owner,
    erase,
    own_database,
    run_audit_verify,
    tokenize_fresh_ip,
)
from tests.integration.fresh_values import fresh_value
from tests.integration.test_who_saw_verified import _reveal, _rows_with, _who_saw
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import TokenType, VaultClient, VaultClientError
from vault_service.domain.purpose import unfit_purpose
from vault_service.service.audit_verify import REVEAL_IN_FLIGHT
from vault_service.service.erased_tokens import ErasedTokens

__all__ = ["anchored", "own_database"]  # fixtures used here


def _not_yet_learned(vault: object) -> None:
    """The vault as a replica that has not read the erase rows yet (attack 43: each replica keeps the erased tokens'
    hashes and refuses them itself; one learns another's erasure only at its next round). Verify is what is tested
    here: what it finds when a replica served the undone value in that interval."""
    vault.wired.vault.erased = ErasedTokens()  # type: ignore[attr-defined]


def test_a_reveal_after_the_owner_undid_and_redid_an_erasure_fails_verify_and_is_marked_by_who_saw(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, exported = anchored
    token, other = tokenize_fresh_ip(own_database, vault), tokenize_fresh_ip(own_database, vault)
    _reveal(own_database, vault, "fraud-investigator", token, "CASE-2026-4101")
    with as_owner(own_database) as owner:  # what a base backup holds: the sealed bytes, no value, no key
        (sealed,) = owner.execute("SELECT sealed FROM vault.tokens WHERE token = %s", (token,)).fetchone() or (None,)
    assert erase(own_database, vault, [token], "GDPR-2026-4102") == [None]
    assert erase(own_database, vault, [other], "GDPR-2026-4103") == [None]  # an erasure that stays done
    time.sleep(REVEAL_IN_FLIGHT.total_seconds() + 0.2)  # past a reveal in flight when the erasure committed
    with as_owner(own_database) as owner:
        (erased_at,) = owner.execute("SELECT erased_at FROM vault.tokens WHERE token = %s", (token,)).fetchone() or (
            None,
        )
        owner.execute("UPDATE vault.tokens SET sealed = %s, erased_at = NULL WHERE token = %s", (sealed, token))
        _not_yet_learned(vault)
        _reveal(own_database, vault, "fraud-investigator", token, "CASE-2026-4104")  # the value shown again
        owner.execute("UPDATE vault.tokens SET sealed = NULL, erased_at = %s WHERE token = %s", (erased_at, token))
    vault.wait_for_checkpoint()

    code, printed = run_audit_verify(own_database, exported, monkeypatch)
    assert code == 1, printed
    assert "erasures reconciled: 2 erased token(s)" in printed, printed  # the owner's redo satisfies reconciliation
    assert "1 reveal(s) after an erasure of the same token: the erasure was undone" in printed, printed
    assert "audit log NOT verified" in printed and "audit log intact" not in printed, printed

    code, printed = _who_saw(own_database, exported, token, monkeypatch)
    assert code == 1, printed
    (marked,) = _rows_with(printed, "detokenize", "CASE-2026-4104")
    assert "REVEALED AFTER AN ERASURE" in marked, printed
    (before,) = _rows_with(printed, "detokenize", "CASE-2026-4101")
    assert "REVEALED AFTER AN ERASURE" not in before, printed
    assert _rows_with(printed, "erase", "GDPR-2026-4102"), printed
    code, printed = _who_saw(own_database, exported, other, monkeypatch)  # the other erasure: nothing marked
    assert code == 1 and "REVEALED AFTER AN ERASURE" not in printed and "1 erasure(s)" in printed, printed

    # The same through the vault's AuditReports, as `tokenvault --as security audit verify / who-saw` ask it.
    with vault_clients(own_database, vault.address) as client_as:
        team = client_as("security-team")
        verdict = team.audit_verify()
        assert not verdict.intact and any("1 reveal(s) after an erasure" in line for line in verdict.lines), verdict
        verdict, rows = team.audit_who_saw(token, purpose="INC-2026-4105")
    assert not verdict.intact
    marked_rows = [r for r in rows if "REVEALED AFTER AN ERASURE" in r.outcome]
    assert [r.purpose for r in marked_rows] == ["CASE-2026-4104"], rows


def test_a_guess_of_an_erased_value_confirmed_by_a_purpose_refusal_after_the_owners_undo_fails_verify(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Attack 43, A43-2: the purpose spelling the value (here its 4 bytes in hex) is refused PurposeHoldsOwnValue to a
    # caller who sees the ip in plain - which tells it its guess was right. Before, verify counted served reveals only.
    vault, exported = anchored
    ip, spelled = next(
        (ip, s)
        for ip, s in (
            (ip, "INC-" + socket.inet_aton(ip).hex()) for ip in iter(lambda: fresh_value(vault_pb2.TOKEN_TYPE_IP), None)
        )
        if unfit_purpose(s) is None
    )
    with VaultClient.connect(vault.address, stack_identity(own_database, "etl-service")) as etl:
        (token,) = etl.tokenize([(TokenType.IP, ip)])
    assert isinstance(token, str), token
    with as_owner(own_database) as owner:  # a base backup
        (sealed,) = owner.execute("SELECT sealed FROM vault.tokens WHERE token = %s", (token,)).fetchone() or (None,)
    assert erase(own_database, vault, [token], "GDPR-2026-4320") == [None]
    time.sleep(REVEAL_IN_FLIGHT.total_seconds() + 0.2)
    with as_owner(own_database) as owner:
        (erased_at,) = owner.execute("SELECT erased_at FROM vault.tokens WHERE token = %s", (token,)).fetchone() or (
            None,
        )
        owner.execute("UPDATE vault.tokens SET sealed = %s, erased_at = NULL WHERE token = %s", (sealed, token))
        _not_yet_learned(vault)
        analyst = VaultClient.connect(vault.address, stack_identity(own_database, "analyst"), deadline=10)
        with analyst, pytest.raises(VaultClientError, match="IP address this call reveals in plain"):
            analyst.detokenize([token], spelled)  # the guess confirmed, no value served
        owner.execute("UPDATE vault.tokens SET sealed = NULL, erased_at = %s WHERE token = %s", (erased_at, token))
    vault.wait_for_checkpoint()

    code, printed = run_audit_verify(own_database, exported, monkeypatch)
    assert code == 1, printed
    assert "1 reveal(s) after an erasure of the same token" in printed and "audit log intact" not in printed, printed
    code, printed = _who_saw(own_database, exported, token, monkeypatch)
    assert code == 1, printed
    (marked,) = [line for line in printed.splitlines() if "PurposeHoldsOwnValue" in line]
    assert "REVEALED AFTER AN ERASURE" in marked, printed
