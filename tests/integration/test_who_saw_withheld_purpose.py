"""`audit who-saw` says when a row's purpose was withheld, instead of showing a blank.

A purpose that spells a value of the call, or was not compared with every value it names, is
stored as the empty string (`WITHHELD_PURPOSE`). No client can send an empty purpose (refused
since the first version), so in a Detokenize or Erase row empty means withheld - but who-saw
printed a blank, which reads as "no purpose given". It now prints WITHHELD_SHOWN; the stored rows,
their hashes and `audit verify` are unchanged. Real Postgres and OpenBao, the command itself.
"""

from __future__ import annotations

import io
import socket
from pathlib import Path

import psycopg
import pytest
from rich.console import Console

from tests.conftest import stack_identity, vault_config
from tests.integration.audit_attacks import Anchored, anchored, erase, own_database, run_audit_verify
from tests.integration.fresh_values import fresh_value
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import Revealed, TokenType, VaultClient, VaultClientError
from vault_service.domain.purpose import WITHHELD_SHOWN, unfit_purpose
from vault_service.entrypoints import audit_report_cli

__all__ = ["anchored", "own_database"]  # fixtures used here


def _who_saw(env: dict[str, str], exported: Path, token: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """`who-saw TOKEN --exported ...` as the security team runs it: exit code and what it printed."""
    printed = io.StringIO()
    monkeypatch.setattr(audit_report_cli, "console", Console(file=printed, width=400))  # one table row per line
    code = audit_report_cli.audit_who_saw(
        vault_config(env, TOKENVAULT_AUDIT_CHECKPOINT_FILE=str(exported)), token, exported
    )
    return code, printed.getvalue()


def _ip_and_hex() -> tuple[str, str]:
    """A fresh ip and the purpose spelling it in hex."""
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    return ip, "INC-" + socket.inet_aton(ip).hex()


def test_who_saw_shows_a_withheld_purpose_as_withheld_and_the_log_still_verifies(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, exported = anchored
    # The ip in hex: a reference to the shape check, unless its digits read as four loose numbers
    # (`INC-0a5b3c7d`: refused as a device id before any comparison), so such an ip is drawn again.
    ip, spelled = next((ip, s) for ip, s in iter(_ip_and_hex, None) if unfit_purpose(s) is None)
    with VaultClient.connect(vault.address, stack_identity(own_database, "etl-service")) as etl:
        (token,) = etl.tokenize([(TokenType.IP, ip)])
    assert isinstance(token, str), token
    with VaultClient.connect(vault.address, stack_identity(own_database, "analyst"), deadline=10) as analyst:
        (shown,) = analyst.detokenize([token], "CASE-2026-950")  # kept
        assert isinstance(shown, Revealed)
        # seen plain: refused, its row names the token, its purpose withheld
        with pytest.raises(VaultClientError, match="IP address this call reveals in plain"):
            analyst.detokenize([token], spelled)
    assert erase(own_database, vault, [token], spelled) == [None]  # erased, purpose withheld
    vault.wait_for_checkpoint()

    code, printed = _who_saw(own_database, exported, token, monkeypatch)
    assert code == 0 and "audit log intact" in printed, printed
    lines = [line for line in printed.splitlines() if "analyst" in line or "privacy-officer" in line]
    assert len(lines) == 3, printed
    assert "CASE-2026-950" in lines[0] and WITHHELD_SHOWN not in lines[0], printed
    assert "refused: PurposeHoldsOwnValue" in lines[1] and WITHHELD_SHOWN in lines[1], printed
    assert "erase" in lines[2] and WITHHELD_SHOWN in lines[2], printed
    assert spelled[4:] not in printed.lower() and ip not in printed

    # Only the display changed: the rows keep the empty purpose their hashes cover, and verify passes.
    with psycopg.connect(own_database["PG_ADMIN_DSN"]) as conn:
        stored = conn.execute(
            "SELECT purpose FROM vault.audit_log WHERE client IN ('analyst', 'privacy-officer') ORDER BY id"
        ).fetchall()
    assert stored == [("CASE-2026-950",), ("",), ("",)]
    code, printed = run_audit_verify(own_database, exported, monkeypatch)
    assert code == 0 and "audit log intact" in printed, printed


def test_who_saw_claims_no_cause_for_a_purpose_withheld_because_the_call_named_an_erased_token(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review 16, findings 6 and 8: the label said "it spelled, or may have named, a stored value"
    # of every withheld row, also of `INC-4821` withheld only because its call named an erased
    # token besides the one revealed (not every value compared, so any purpose is withheld). The
    # printed row of the revealed token must claim no cause.
    vault, exported = anchored
    with VaultClient.connect(vault.address, stack_identity(own_database, "etl-service")) as etl:
        shown, gone = etl.tokenize([(TokenType.IP, fresh_value(vault_pb2.TOKEN_TYPE_IP)) for _ in range(2)])
    assert isinstance(shown, str) and isinstance(gone, str), (shown, gone)
    assert erase(own_database, vault, [gone], "GDPR-2026-0042") == [None]
    with VaultClient.connect(vault.address, stack_identity(own_database, "analyst"), deadline=10) as analyst:
        revealed, _ = analyst.detokenize([shown, gone], "INC-4821")
    assert isinstance(revealed, Revealed), revealed
    vault.wait_for_checkpoint()

    code, printed = _who_saw(own_database, exported, shown, monkeypatch)
    assert code == 0 and "audit log intact" in printed, printed
    (withheld,) = [line for line in printed.splitlines() if "analyst" in line]
    assert "(withheld by the vault)" in withheld and "INC-4821" not in withheld, printed
    for claim in ("spelled", "named", "stored value"):  # no cause the row did not have
        assert claim not in withheld, printed
