"""`audit who-saw` answers from the verified records only, and names erasures too (insider round 8).

Break 2: who-saw verified the log, then printed what a second query (`revealed && ...`)
returned. The database owner made the two queries see different rows (a row-level-security
policy keyed on the query's text) and hid an analyst's reveals from who-saw while both commands
said "intact". Finding 3: an erasure's audit row did not say which tokens it erased, so "who
erased this token, under which case?" had no answer in the chain.

The command itself runs here (`audit_report_cli.audit_who_saw`, with its own wiring as on a vault pod),
against real Postgres and OpenBao, on a database of the test's own.
"""

from __future__ import annotations

import io
from pathlib import Path

import psycopg
import pytest
from rich.console import Console

from tests.conftest import RunningVault, stack_identity, vault_config
from tests.integration.audit_attacks import (
    SERVING_ROLE_ERASE,
    Anchored,
    anchored,
    as_owner,
    audit_verify_fully,
    erase,
    own_database,
    run_audit_verify,
    tokenize_fresh_ip,
)
from tokenvault_client import Revealed, VaultClient
from tokenvault_client.errors import Internal
from vault_service.adapters.transit import verify_signature
from vault_service.bootstrap import bootstrap
from vault_service.domain.key_check import check_value
from vault_service.entrypoints import audit_report_cli
from vault_service.service.audit_verify import AuditNotVerified, verify_audit, who_saw

__all__ = ["anchored", "own_database"]  # fixtures used here

_HIDE_FROM_WHO_SAW = (  # /tmp/attack8/who_saw_hidden.sql, as the database owner
    "ALTER TABLE vault.audit_log ENABLE ROW LEVEL SECURITY;"
    " CREATE POLICY everyone_inserts ON vault.audit_log FOR INSERT WITH CHECK (true);"
    " CREATE POLICY hide_from_who_saw ON vault.audit_log FOR SELECT"
    "  USING (pg_catalog.current_query() NOT LIKE '%revealed &&%' OR client <> 'fraud-investigator')"
)


def _who_saw(env: dict[str, str], exported: Path, token: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """`who-saw TOKEN --exported ...` as the security team runs it: exit code and what it printed."""
    printed = io.StringIO()
    monkeypatch.setattr(audit_report_cli, "console", Console(file=printed, width=400))  # one table row per line
    code = audit_report_cli.audit_who_saw(
        vault_config(env, TOKENVAULT_AUDIT_CHECKPOINT_FILE=str(exported)), token, exported
    )
    return code, printed.getvalue()


def _rows_with(printed: str, *cells: str) -> list[str]:
    return [line for line in printed.splitlines() if all(cell in line for cell in cells)]


def _reveal(env: dict[str, str], vault: RunningVault, who: str, token: str, purpose: str) -> None:
    with VaultClient.connect(vault.address, stack_identity(env, who), deadline=10) as client:
        (outcome,) = client.detokenize([token], purpose)
    assert isinstance(outcome, Revealed), outcome


def test_who_saw_lists_the_reveals_a_policy_hides_from_any_query_but_verification(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, exported = anchored
    token = tokenize_fresh_ip(own_database, vault)
    _reveal(own_database, vault, "fraud-investigator", token, "CASE-2026-810")
    _reveal(own_database, vault, "fraud-investigator", token, "CASE-2026-811")
    vault.wait_for_checkpoint()
    with as_owner(own_database) as conn:
        conn.execute(_HIDE_FROM_WHO_SAW)
    # The serving sessions run with row_security = off (attack 46): a reveal under the policy fails, not filtered
    investigator = stack_identity(own_database, "fraud-investigator")
    with (
        VaultClient.connect(vault.address, investigator, deadline=10) as client,
        pytest.raises(Internal, match="row-level security policy"),
    ):
        client.detokenize([token], "CASE-2026-812")

    code, printed = _who_saw(own_database, exported, token, monkeypatch)
    # The chain verifies (every row read); the owner's policies are a finding of their own since attack 43's
    # schema check: listed, and the answer exits 1.
    assert "audit log chain intact" in printed, printed
    assert code == 1, printed
    assert "the vault schema differs from its migrations: policy hide_from_who_saw on vault.audit_log" in printed
    assert _rows_with(printed, "detokenize", "fraud-investigator", "CASE-2026-810"), printed
    assert _rows_with(printed, "detokenize", "fraud-investigator", "CASE-2026-811"), printed
    assert "2 reveal(s) and 0 erasure(s) of this token" in printed, printed


def test_who_saw_names_who_erased_a_token_under_which_case_from_the_verified_chain(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, exported = anchored
    token, kept, other = (tokenize_fresh_ip(own_database, vault) for _ in range(3))
    _reveal(own_database, vault, "analyst", token, "CASE-2026-820")
    assert erase(own_database, vault, [token, other], "GDPR-2026-0042") == [None, None]
    again = erase(own_database, vault, [token], "GDPR-2026-0043")  # nothing left to erase: not named
    assert again != [None]
    vault.wait_for_checkpoint()

    code, printed = _who_saw(own_database, exported, token, monkeypatch)
    assert code == 0 and "audit log intact" in printed, printed
    assert _rows_with(printed, "erase", "privacy-officer", "GDPR-2026-0042", "ok: 2 erased"), printed
    assert _rows_with(printed, "detokenize", "analyst", "CASE-2026-820"), printed
    assert "GDPR-2026-0043" not in printed
    assert "1 reveal(s) and 1 erasure(s) of this token" in printed, printed

    # The erase row names exactly the tokens it erased, and its hash covers them: the chain verifies.
    report = audit_verify_fully(vault, exported)
    assert report.intact, report.finding
    keys = vault.wired.keys.ring.audit_keys
    assert [r.event.purpose for r in who_saw(report, keys, other)] == ["GDPR-2026-0042"]
    assert who_saw(report, keys, kept) == []
    (erasure,) = [r for r in report.records if r.event.purpose == "GDPR-2026-0042"]
    assert len(erasure.event.revealed) == 2 and erasure.event.client_serial


# Insider round 9, Break 2: vault.erase_tokens stores the keyed hashes its caller gives (the
# database has no audit key to check them), and the serving role may call it. It erased token A
# with a row naming token B (or a made-up hash, or a token erased before), and who-saw showed the
# lie as verified. audit verify now reconciles the erased tokens with the verified erase rows.


def _hash_in_log(env: dict[str, str], purpose: str) -> bytes:
    """The keyed token hash of the reveal made under `purpose`, read as the serving role may."""
    with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as conn:
        row = conn.execute(
            "SELECT revealed[1] FROM vault.audit_log WHERE action = 'detokenize' AND purpose = %s", (purpose,)
        ).fetchone()
    assert row is not None and row[0] is not None
    return bytes(row[0])


@pytest.mark.parametrize("named", ["a revealed token", "a made-up hash", "a token erased before"])
def test_an_erase_row_naming_another_token_than_the_one_erased_fails_verify_and_who_saw(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch, named: str
) -> None:
    vault, exported = anchored
    erased, other = tokenize_fresh_ip(own_database, vault), tokenize_fresh_ip(own_database, vault)
    if named == "a revealed token":
        _reveal(own_database, vault, "fraud-investigator", other, "CASE-2026-901")
        lie = _hash_in_log(own_database, "CASE-2026-901")
    elif named == "a made-up hash":
        lie = bytes(range(16))
    else:  # a genuine erasure of `other` names it once; the lie names it a second time
        assert erase(own_database, vault, [other], "GDPR-2026-0900") == [None]
        (lie,) = _erasure_hashes(own_database, "GDPR-2026-0900")
    vault.wait_for_checkpoint()
    code, printed = run_audit_verify(own_database, exported, monkeypatch)
    assert code == 0 and "erasures reconciled" in printed, printed  # before the lie: all is well

    with psycopg.connect(own_database["PG_VAULT_DSN"], autocommit=True) as serving_role:
        done = serving_role.execute(SERVING_ROLE_ERASE, ([erased], [lie], "ab" * 32, "GDPR-2026-902")).fetchall()
    assert done == [(erased,)]  # the database cannot tell: it erased `erased`, the row names `lie`
    (lying_row,) = _erasure_ids(own_database, "GDPR-2026-902")
    vault.wait_for_checkpoint()

    code, printed = run_audit_verify(own_database, exported, monkeypatch)
    assert code == 1, printed
    assert "audit log chain intact" in printed and "audit log NOT verified" in printed, printed  # what a row says
    if named == "a token erased before":
        (genuine_row,) = _erasure_ids(own_database, "GDPR-2026-0900")
        assert f"erase records {genuine_row}, {lying_row} all name an erased ip token" in printed, printed
    else:
        assert f"erase record {lying_row} names 1 token(s) that are not erased" in printed, printed
    assert "is named by no erase record" in printed, printed  # the token really erased
    assert erased not in printed and other not in printed and erased[3:] not in printed, printed
    for token in (erased, other):
        code, printed = _who_saw(own_database, exported, token, monkeypatch)
        assert code == 1, printed
        assert "reveal(s) and" not in printed and "GDPR-2026-902" not in printed, printed


def test_genuine_erasures_reconcile_with_their_erase_rows(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault, exported = anchored
    first, second, third = (tokenize_fresh_ip(own_database, vault) for _ in range(3))
    assert erase(own_database, vault, [first, second], "GDPR-2026-0910") == [None, None]
    erased_third, again_first = erase(own_database, vault, [third, first], "GDPR-2026-0911")
    assert erased_third is None and again_first is not None  # `first` had nothing left: not named again
    vault.wait_for_checkpoint()

    code, printed = run_audit_verify(own_database, exported, monkeypatch)
    assert code == 0, printed
    assert "erasures reconciled: 3 erased token(s), each named by one erase record" in printed, printed
    code, printed = _who_saw(own_database, exported, third, monkeypatch)
    assert code == 0 and "0 reveal(s) and 1 erasure(s) of this token" in printed, printed


def _erasure_ids(env: dict[str, str], purpose: str) -> list[int]:
    with as_owner(env) as conn:
        rows = conn.execute("SELECT id FROM vault.audit_log WHERE action = 'erase' AND purpose = %s", (purpose,))
        return [int(row[0]) for row in rows.fetchall()]


def _erasure_hashes(env: dict[str, str], purpose: str) -> list[bytes]:
    with as_owner(env) as conn:
        row = conn.execute(
            "SELECT revealed FROM vault.audit_log WHERE action = 'erase' AND purpose = %s", (purpose,)
        ).fetchone()
    assert row is not None
    return [bytes(h) for h in row[0]]


# Insider round 10, finding 6 (its second half): who_saw trusted any report's `intact`, and a report
# from `verify_audit` alone checks the chain and checkpoints but never the audit keys loaded. With
# the audit key swapped (its row's check value rewritten too, so only the chain knows), such a report
# is intact and who_saw answered "no reveal" for a token revealed before. It now takes only the report
# of the full verification (`verify_audit_and_erasures`): mypy refuses the call, and so does who_saw.


def test_who_saw_refuses_a_report_whose_audit_keys_were_not_checked(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    vault, exported = anchored
    token = tokenize_fresh_ip(own_database, vault)
    _reveal(own_database, vault, "fraud-investigator", token, "CASE-2026-940")
    vault.wait_for_checkpoint()
    plaintext, swapped = vault.wired.wrapper.new_data_key()
    with as_owner(own_database) as owner:
        owner.execute(
            "UPDATE vault.data_keys SET wrapped_key = %s, check_value = %s WHERE purpose = 'audit'",
            (swapped, check_value(plaintext)),
        )

    wired = bootstrap(vault_config(own_database))  # as who-saw starts: it loads the swapped audit key
    try:
        chain_only = verify_audit(wired.audit, wired.signer.public_keys(), verify_signature, exported)
        assert chain_only.intact, chain_only.finding  # chain and checkpoints hold: only the key check sees it
        with pytest.raises(AuditNotVerified):
            who_saw(chain_only, wired.keys.ring.audit_keys, token)  # type: ignore[arg-type]  # mypy refuses it
        full = wired.verify_audit_fully(exported)
        assert not full.intact and "not the key the audit log recorded" in (full.keys_problem or ""), full
        with pytest.raises(AuditNotVerified, match="not the key the audit log recorded"):
            who_saw(full, wired.keys.ring.audit_keys, token)
    finally:
        wired.close()
