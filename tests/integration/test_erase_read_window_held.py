"""The erased-token set's read window and the token cache hold against the database owner (attack 45, A45-1/A45-2).

A45-1: each key-check round read the erase rows from ~1,000 ids below the highest id the last read saw, the log's
`max(id)` included, bounded by nothing; one row the owner put at id 10^15 for the length of one round of replica B
(and took away) moved every later read of B past every genuine row: B never learned another replica's erasure until
restarted, handed the erased token out after the owner's write-back (A43-3), `audit verify` intact. Now the read
ends within the audit id sequence (a row beyond it is reported: log, `tokenvault_erase_read_window_tampered_total`),
its start never passes the head this replica's audit upkeep anchored in an exported checkpoint, and a log whose
newest id falls below one read before is reported and read again from its start - with the sequence moved too.

A45-2: a Tokenize cache hit consulted neither the row nor the erased-token set; the cache was cleared when the
replica's round learned a new erase row or saw `vault.erasure_count` move, which the owner writes. Now the cache
answers nothing once the set gained a hash since it was last cleared, whoever fed the set.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, erase, own_database
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erased_tokens_known import _tokenize
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import ItemError
from vault_service.service.erased_tokens import erase_read_window_tampered

__all__ = ["own_database"]

FAR = 10**15


def _far_row_for_one_round(env: dict[str, str], round_of_b: Callable[[], None], sequence_too: bool) -> None:
    """One row at id FAR while B's key-check round runs, then gone (the attack's act); `sequence_too`: the audit id
    sequence set to FAR for that time and back, so the row is within the sequence while B reads."""
    with as_owner(env) as owner:
        cols = [
            c.name
            for c in owner.execute("SELECT * FROM vault.audit_log LIMIT 0").description or ()
            if c.name not in ("id", "prev_hash", "row_hash")
        ]
        (last, called) = owner.execute("SELECT last_value, is_called FROM vault.audit_log_id_seq").fetchone() or (1, 0)
        owner.execute(
            f"INSERT INTO vault.audit_log (id, prev_hash, row_hash, {', '.join(cols)})"
            f" SELECT %s, sha256(random()::text::bytea), sha256(random()::text::bytea), {', '.join(cols)}"
            " FROM vault.audit_log ORDER BY id DESC LIMIT 1",
            (FAR,),
        )
        if sequence_too:
            owner.execute("SELECT setval('vault.audit_log_id_seq', %s, true)", (FAR,))
        try:
            round_of_b()
        finally:
            owner.execute("DELETE FROM vault.audit_log WHERE id = %s", (FAR,))
            if sequence_too:
                owner.execute("SELECT setval('vault.audit_log_id_seq', %s, %s)", (last, called))


def _refused(outcome: object) -> None:
    assert not isinstance(outcome, str), "replica B handed the erased token out"
    assert isinstance(outcome, ItemError) and outcome.code == grpc.StatusCode.DATA_LOSS, outcome


@pytest.mark.parametrize("sequence_too", [False, True], ids=["row-beyond-the-sequence", "sequence-moved-too"])
def test_a_transient_far_row_blinds_no_replica_to_later_erasures(
    own_database: dict[str, str], sequence_too: bool
) -> None:
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(own_database) as first, running_vault(own_database) as second:
        token = _tokenize(own_database, first, ip)
        assert isinstance(token, str)
        with as_owner(own_database) as owner:
            (sealed, fingerprint) = owner.execute(
                "SELECT sealed, fingerprint FROM vault.tokens WHERE token = %s", (token,)
            ).fetchone() or (None, None)
        told = erase_read_window_tampered()
        _far_row_for_one_round(own_database, second.maintainer.check, sequence_too)
        assert erase(own_database, first, [token], "GDPR-2026-4450") == [None]  # the officer, on replica A
        second.maintainer.check()  # B's next round learns A's erasure (the old code read from FAR - 1000 on)
        assert len(second.wired.vault.erased) == 1, "replica B did not learn replica A's erasure"
        assert erase_read_window_tampered() > told  # the far row (or the log's head going back) is reported
        with as_owner(own_database) as owner:
            erased_row = owner.execute(
                "SELECT sealed, fingerprint, next_fingerprint, erased_at FROM vault.tokens WHERE token = %s", (token,)
            ).fetchone()
        with as_owner(own_database) as owner:  # A43-3's write-back
            owner.execute(
                "UPDATE vault.tokens SET sealed = %s, fingerprint = %s, erased_at = NULL WHERE token = %s",
                (sealed, fingerprint, token),
            )
        again = _tokenize(own_database, second, ip)  # the person's next login, served by B
        with as_owner(own_database) as owner:  # the erased state put back as the erasure left it
            owner.execute(
                "UPDATE vault.tokens SET sealed = %s, fingerprint = %s, next_fingerprint = %s, erased_at = %s"
                " WHERE token = %s",
                (*(erased_row or ()), token),
            )
        _refused(again)


def test_a_replica_hands_out_no_erased_token_from_its_cache_whatever_vault_erasure_count_says(
    own_database: dict[str, str],
) -> None:
    """B cached the person's token; the owner plants the far row for one of B's rounds (A45-1) and puts
    vault.erasure_count back after A's erasure: B still learns the erasure and its cache answers nothing for it."""
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(own_database) as first, running_vault(own_database) as second:
        token = _tokenize(own_database, second, ip)  # the person's login served by B: cached there
        assert isinstance(token, str)
        _far_row_for_one_round(own_database, second.maintainer.check, sequence_too=False)
        with as_owner(own_database) as owner:
            (count,) = owner.execute("SELECT erasures FROM vault.erasure_count").fetchone() or (0,)
        assert erase(own_database, first, [token], "GDPR-2026-4452") == [None]  # the officer, on replica A
        with as_owner(own_database) as owner:  # the mark as it was (B reads it each round)
            owner.execute("UPDATE vault.erasure_count SET erasures = %s", (count,))
        for _ in range(2):
            second.maintainer.check()
        renewed = _tokenize(own_database, first, ip)  # A: a new token for the value
        assert isinstance(renewed, str) and renewed != token
        assert _tokenize(own_database, second, ip) == renewed  # B: the same new token, not the erased one


def test_the_token_cache_answers_no_token_the_erased_set_learned_whoever_fed_it(own_database: dict[str, str]) -> None:
    """The set learns A's erasure by its own read (no key-check round clearing the cache after it): B's next
    Tokenize of the value does not come from the cache (the old code cleared it only in that round)."""
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(own_database) as first, running_vault(own_database) as second:
        token = _tokenize(own_database, second, ip)  # cached in B
        assert isinstance(token, str)
        assert erase(own_database, first, [token], "GDPR-2026-4453") == [None]
        assert second.wired.vault.erased.learn(second.wired.token_store) == 1  # the set's read, alone
        again = _tokenize(own_database, second, ip)
        assert again != token, "B answered a token its erased-token set holds from its cache"
        assert isinstance(again, str)  # a new token: the value was erased and is tokenized anew
