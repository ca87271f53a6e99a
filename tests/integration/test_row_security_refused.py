"""A row-level security policy on a vault table fails the serving sessions' statements; it is refused each round.

A46-2: right after the officer's erasure, the database owner wrote the token's row back and, for the length of
one call, enabled row security on `vault.audit_log` with a policy that hid the rows from the erase row on from
Detokenize's `(SELECT max(id) FROM ONLY vault.audit_log)` alone (the policy sees the statement: `current_query()`).
A colluding investigator's reveal on a replica whose key-check round had not yet come was served, its record said
"fetch saw records up to" a head before the erasure, and `audit verify` exit 0: no reveal after an erasure.
The serving sessions now run with `row_security = off`: the statement fails (nothing revealed, logged as a
policy to report); verify, whose sessions read past a policy, names it while it stands. Row security, policies
and rules on vault tables are refused at start and make a running replica's database unhealthy.
Real OpenBao and PostgreSQL, a database of each test's own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, erase, own_database, run_audit_verify
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erased_tokens_known import _reveal, _tokenize
from tokenvault_api.v1 import vault_pb2
from tokenvault_client.errors import Internal
from vault_service.service.maintenance import CatalogAltered, catalog_findings

__all__ = ["own_database"]

COLS = "sealed, fingerprint, next_fingerprint, erased_at"
POLICY = (  # attack 46's: only the fetch's statement loses the rows from the erase row on
    "ALTER TABLE vault.audit_log ENABLE ROW LEVEL SECURITY;"
    " CREATE POLICY fetch_saw_less ON vault.audit_log USING (id < {erase_id}"
    " OR strpos(current_query(), 'max(id) FROM ONLY vault.audit_log)') = 0) WITH CHECK (true)"
)


def _row(env: dict[str, str], token: str) -> tuple[object, ...]:
    with as_owner(env) as owner:
        row = owner.execute(f"SELECT {COLS} FROM vault.tokens WHERE token = %s", (token,)).fetchone()
    assert row is not None
    return tuple(row)


def _put(env: dict[str, str], token: str, row: tuple[object, ...]) -> None:
    with as_owner(env) as owner:
        owner.execute(
            "UPDATE vault.tokens SET sealed = %s, fingerprint = %s, next_fingerprint = %s, erased_at = %s"
            " WHERE token = %s",
            (*row, token),
        )


def test_a_transient_policy_steering_the_fetch_head_refuses_the_reveal_and_verify_names_it(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    fast = {"TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "1"}
    with running_vault(own_database, **fast) as first, running_vault(own_database, **fast) as second:
        token = _tokenize(own_database, first, ip)
        assert isinstance(token, str)
        before = _row(own_database, token)
        assert erase(own_database, first, [token], "GDPR-2026-4647") == [None]  # the officer, on A
        after = _row(own_database, token)
        first.wait_for_checkpoint()  # the erasure anchored and exported, as A's upkeep does within seconds
        with as_owner(own_database) as owner:
            (erase_id,) = owner.execute(
                "SELECT id FROM vault.audit_log WHERE action = 'erase' ORDER BY id DESC LIMIT 1"
            ).fetchone() or (0,)
        # At once, before B's next key-check round: A43-1's undo, and the policy for one call
        _put(own_database, token, before)
        with as_owner(own_database) as owner:
            owner.execute(POLICY.format(erase_id=int(erase_id)))
        try:
            with caplog.at_level(logging.ERROR, logger="vault_service"):
                try:
                    outcome: object = _reveal(own_database, second, token)  # the colluding investigator, on B
                except Internal as refused:
                    outcome = refused
            assert isinstance(outcome, Internal), f"served under the owner's policy: {outcome!r}"  # before: revealed
            assert "row-level security policy" in outcome.details and ip not in outcome.details, outcome
            logged = [r for r in caplog.records if "row-level security policy" in r.getMessage()]
            assert logged and getattr(logged[0], "row_security_policy_on", None) == "audit_log", caplog.text
            assert "report it to the security team" in logged[0].getMessage().lower()
            assert ip not in caplog.text
            code, printed = run_audit_verify(
                own_database, Path(own_database["TOKENVAULT_AUDIT_CHECKPOINT_FILE"]), monkeypatch
            )
            assert code == 1, printed  # while the policy stands, verify reads past it and names it
            assert "policy fetch_saw_less on vault.audit_log" in printed, printed
            # Walk 47, W47-8: the rows the policy hides made the chain read "TAMPERED" first; the policy leads now.
            assert "may hide rows from this report's reads (policy fetch_saw_less on vault.audit_log" in printed
            assert "audit log TAMPERED" not in printed and "ERASURES DO NOT MATCH" not in printed, printed
        finally:
            with as_owner(own_database) as owner:
                owner.execute("DROP POLICY fetch_saw_less ON vault.audit_log")
                owner.execute("ALTER TABLE vault.audit_log DISABLE ROW LEVEL SECURITY")
            _put(own_database, token, after)
        with as_owner(own_database) as owner:
            lying = owner.execute(
                "SELECT count(*) FROM vault.audit_log WHERE id > %s AND outcome LIKE '%%revealed%%'", (erase_id,)
            ).fetchone()
        assert lying == (0,)  # no record of a reveal after the erasure, which would say it fetched before


FILTERS = {  # each a filter on a vault table the migrations never make, no round's read meets: (SQL, words, undo)
    "policy": (
        "CREATE POLICY see_all ON vault.audit_log USING (true)",  # row security not enabled: in effect once it is
        "policy see_all on vault.audit_log",
        "DROP POLICY see_all ON vault.audit_log",
    ),
    "row security": (
        "ALTER TABLE vault.tokens ENABLE ROW LEVEL SECURITY",  # no policy: the serving role reads no row
        "row-level security is enabled on vault.tokens",
        "ALTER TABLE vault.tokens DISABLE ROW LEVEL SECURITY",
    ),
    "rule": (
        "CREATE RULE keep_quiet AS ON UPDATE TO vault.audit_log DO INSTEAD NOTHING",
        "rule keep_quiet on vault.audit_log",
        "DROP RULE keep_quiet ON vault.audit_log",
    ),
}


def _owner(env: dict[str, str], sql: str) -> None:
    with as_owner(env) as owner:
        owner.execute(sql)


def test_row_security_policies_and_rules_on_vault_tables_are_refused_at_start_and_each_round(
    own_database: dict[str, str],
) -> None:
    with running_vault(own_database) as replica:
        replica.maintainer.check()
        assert replica.maintainer.healthy["database"]
        for kind, (plant, _, undo) in FILTERS.items():
            _owner(own_database, plant)
            replica.maintainer.check()
            assert not replica.maintainer.healthy["database"], kind  # before: healthy
            assert catalog_findings() >= 1, kind  # walk 47, W47-23: its own metric and alert, not an outage's
            _owner(own_database, undo)
            replica.maintainer.check()
            assert replica.maintainer.healthy["database"], kind
            assert catalog_findings() == 0, kind
    for plant, _, _ in FILTERS.values():
        _owner(own_database, plant)
    with pytest.raises(CatalogAltered) as refused, running_vault(own_database):
        pass  # before: it started
    for kind, (_, words, _) in FILTERS.items():
        assert words in str(refused.value), (kind, str(refused.value))


def test_a_policy_on_vault_tokens_does_not_make_a_rewritten_audit_log_not_judged(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 47, R47-14: the owner who rewrote an audit row added `CREATE POLICY ... ON vault.tokens USING (true)`
    (hiding nothing, and not on the log): verify said the chain "as read, NOT JUDGED". The policy still leads; the
    tampering it cannot explain is TAMPERED (the one-line verdict's: tests/unit/test_audit_report_lines_w47.py)."""
    with running_vault(own_database, TOKENVAULT_AUDIT_CHECKPOINT_SECONDS="1") as vault:
        _tokenize(own_database, vault, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        vault.wait_for_checkpoint()
        with as_owner(own_database) as owner:
            (target,) = owner.execute("SELECT min(id) FROM vault.audit_log").fetchone() or (0,)
            owner.execute("UPDATE vault.audit_log SET purpose = purpose || '-x' WHERE id = %s", (target,))
            owner.execute("ALTER TABLE vault.tokens ENABLE ROW LEVEL SECURITY")
            owner.execute("CREATE POLICY r47_14 ON vault.tokens USING (true)")
        try:
            code, printed = run_audit_verify(
                own_database, Path(own_database["TOKENVAULT_AUDIT_CHECKPOINT_FILE"]), monkeypatch
            )
        finally:
            with as_owner(own_database) as owner:
                owner.execute("DROP POLICY r47_14 ON vault.tokens")
                owner.execute("ALTER TABLE vault.tokens DISABLE ROW LEVEL SECURITY")
                owner.execute("UPDATE vault.audit_log SET purpose = left(purpose, -2) WHERE id = %s", (target,))
    assert code == 1, printed
    first = printed.lstrip().splitlines()[0]
    assert first.startswith("audit log NOT verified: row security on the vault's tables may hide rows"), printed
    assert "policy r47_14 on vault.tokens" in printed, printed
    assert f"audit log TAMPERED from record id {target}" in printed, printed  # before: "as read, NOT JUDGED"
