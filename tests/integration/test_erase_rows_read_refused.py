"""The erased-token set's read of the audit log fails loudly rather than read what the owner chose (attack 44).

A44-1: the database owner's row-level security policy on `vault.audit_log` can see the query
(`current_query()`) and hid the erase rows from the set's read alone: a replica started afterwards knew of no
erasure and handed out the erased token whose row the owner had written back. That read runs with
`SET LOCAL row_security = off`, so it fails instead: a replica does not start, a running one reports its
database unavailable; report commands (who-saw, verify) still read the chain past such a policy. A44-4: an
owner-written erase row of 40 elements of 1 MiB was held whole by every replica; only hashes of their length
are read. Real OpenBao and PostgreSQL, a database of each test's own.
"""

from __future__ import annotations

import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, erase, own_database
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erased_tokens_known import _reveal, _tokenize
from tokenvault_api.v1 import vault_pb2
from vault_service.service.maintenance import ErasedTokensUnread

__all__ = ["own_database"]

HIDE = (  # sees the query: erase rows hidden from the erased-token set's read only, every other read unchanged
    "CREATE POLICY hide_erasures ON vault.audit_log USING"
    " (action <> 'erase' OR current_query() NOT LIKE '%cardinality(revealed)%') WITH CHECK (true)"
)


def _erased_token(env: dict[str, str]) -> str:
    """A token tokenized and then erased by a vault on the test's database; its row then written back whole."""
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(env) as first:
        token = _tokenize(env, first, ip)
        assert isinstance(token, str)
        with as_owner(env) as owner:
            sealed, fingerprint = owner.execute(
                "SELECT sealed, fingerprint FROM vault.tokens WHERE token = %s", (token,)
            ).fetchone() or (None, None)
        assert erase(env, first, [token], "GDPR-2026-4440") == [None]
    with as_owner(env) as owner:  # A43-3's undo: the value and fingerprint back, the mark cleared
        owner.execute(
            "UPDATE vault.tokens SET sealed = %s, fingerprint = %s, erased_at = NULL WHERE token = %s",
            (sealed, fingerprint, token),
        )
    return token


def test_a_policy_hiding_the_erase_rows_stops_a_replica_from_starting(own_database: dict[str, str]) -> None:
    _erased_token(own_database)
    with as_owner(own_database) as owner:
        owner.execute("ALTER TABLE vault.audit_log ENABLE ROW LEVEL SECURITY")
        owner.execute(HIDE)
    # The start-up catalog check names the policy first (attack 46); the erase rows' read would fail on it too
    refused = pytest.raises(ErasedTokensUnread, match=r"policy hide_erasures on vault\.audit_log")
    with refused, running_vault(own_database):
        pass  # before: it started, knew of no erasure and handed the erased token out at the next login


def test_a_policy_added_while_a_replica_runs_makes_it_report_its_database_unavailable(
    own_database: dict[str, str],
) -> None:
    with running_vault(own_database) as replica:
        replica.maintainer.check()
        assert replica.maintainer.healthy["database"]
        with as_owner(own_database) as owner:
            owner.execute("ALTER TABLE vault.audit_log ENABLE ROW LEVEL SECURITY")
            owner.execute(HIDE)
        replica.maintainer.check()  # another replica's erasures would go unknown here: unhealthy, said
        assert not replica.maintainer.healthy["database"]


def test_an_owner_written_erase_row_of_large_elements_is_not_held(own_database: dict[str, str]) -> None:
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(own_database) as replica:
        token = _tokenize(own_database, replica, ip)
        assert isinstance(token, str)
        _reveal(own_database, replica, token)  # a row naming the token's keyed hash, which the owner relabels
        with as_owner(own_database) as owner:
            owner.execute("ALTER TABLE vault.audit_log DROP CONSTRAINT audit_log_row_sizes_bounded")
            (row_id,) = owner.execute(
                "SELECT id FROM vault.audit_log WHERE cardinality(revealed) > 0 ORDER BY id DESC LIMIT 1"
            ).fetchone() or (None,)
            owner.execute(
                "UPDATE vault.audit_log SET action = 'erase', outcome = 'ok:1', revealed ="
                " ARRAY(SELECT decode(lpad(to_hex(i), 8, '0'), 'hex') || convert_to(repeat('x', 1048572), 'UTF8')"
                " FROM generate_series(1, 40) AS i) WHERE id = %s",
                (row_id,),
            )
        replica.maintainer.check()
        held = replica.wired.vault.erased
        assert len(held) == 0, f"{len(held)} element(s) held"  # before: 40 of 1 MiB, kept for good


def test_each_round_reads_the_log_from_near_its_head_when_no_erasure_was_made(own_database: dict[str, str]) -> None:
    # Before, the next read started after the newest erase row: with none, every key-check round read the whole
    # audit log again (one row per reveal, millions of them in a year).
    with running_vault(own_database) as replica:
        token = _tokenize(own_database, replica, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        assert isinstance(token, str)
        for _ in range(3):
            _reveal(own_database, replica, token)
        with as_owner(own_database) as owner:
            (head,) = owner.execute("SELECT max(id) FROM vault.audit_log").fetchone() or (None,)
        replica.maintainer.check()
        assert isinstance(head, int) and replica.wired.vault.erased._newest >= head
