"""A running replica's rebuild of its erased-token set is applied only when its read tallies with a signed commitment
(attack 49, A49-1 and A49-1b; review 47's R47-1 rebuild).

R47-1: after an erase-row commitment mismatch a running replica re-reads every erase row from the log's start and
rebuilds its erased-token set from that read. That read was checked against no commitment, so the database owner, with
two one-column UPDATEs over two key-check rounds,
1. set a recent reveal row R's `action` to 'erase' for one round: a mismatch, the replica flagged to rebuild;
2. put R back and set the OLD erase row E's `action` to 'reveal' for the next round only: the rebuild read did not
   select E, the range the check compares matched, and the replica was healthy with E's token forgotten for its life -
   after A43-3's write-back it handed the ERASED token out (A49-1);
or relabelled an old reveal row of a live token as an erase row (hash recomputed, next row relinked) for the length
of the rebuilding round: the replica learned it and refused the live token for its life (A49-1b).

Now the rebuild read is counted into the running digest from the log's start up to the newest signed checkpoint the
replica can verify: applied only when it matches that commitment; otherwise the set is kept as it was (no hash
dropped, none learned from rows the checkpoint covers), the replica stays unhealthy and rebuilds again next round.

Real OpenBao and PostgreSQL, in-process replicas, a database of each test's own.
"""

from __future__ import annotations

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, erase, own_database
from tests.integration.erase_rows import FAST, committed_head, newest_row, put_back, relabel, wait_anchored
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erase_rows_at_start import _outcome
from tests.integration.test_erased_tokens_known import _reveal, _tokenize
from tokenvault_api.v1 import vault_pb2
from vault_service.service.maintenance import DATABASE

__all__ = ["own_database"]

_ROW = "SELECT sealed, fingerprint, next_fingerprint, erased_at FROM vault.tokens WHERE token = %s"
_WRITE = "UPDATE vault.tokens SET sealed = %s, fingerprint = %s, next_fingerprint = %s, erased_at = %s WHERE token = %s"
_NEWEST_REVEAL = (
    "SELECT id, action FROM vault.audit_log WHERE cardinality(revealed) = 1 AND action <> 'erase'"
    " ORDER BY id DESC LIMIT 1"
)


def test_a49_1_an_old_committed_erasure_hidden_from_the_rebuild_read_is_kept_and_the_replica_stays_unhealthy(
    own_database: dict[str, str],
) -> None:
    env = own_database
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(env, **FAST) as first:  # replica A erases T; its upkeep commits to E (v2)
        token = _tokenize(env, first, ip)
        assert isinstance(token, str)
        with as_owner(env) as owner:
            before = owner.execute(_ROW, (token,)).fetchone()
        assert erase(env, first, [token], "GDPR-2026-4901") == [None]
        with as_owner(env) as owner:
            after = owner.execute(_ROW, (token,)).fetchone()
            (erase_id,) = owner.execute(
                "SELECT id FROM vault.audit_log WHERE action = 'erase' ORDER BY id DESC LIMIT 1"
            ).fetchone() or (0,)
            owner.execute("SELECT setval('vault.audit_log_id_seq', %s)", (int(erase_id) + 1500,))  # a month of rows
        _tokenize(env, first, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(first, newest_row(env))
    assert committed_head(env)[0] > erase_id and committed_head(env)[1] == 1
    with running_vault(env, **FAST, TOKENVAULT_KEY_CHECK_SECONDS="3600") as second:
        learned_at_start = len(second.wired.vault.erased)  # B learned E at start, checked against the commitment
        second.maintainer.check()
        assert second.maintainer.healthy[DATABASE]
        other = _tokenize(env, second, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        assert isinstance(other, str)
        _reveal(env, second, other)  # row R names hash(other)
        with as_owner(env) as owner:
            (reveal_id, reveal_action) = owner.execute(_NEWEST_REVEAL).fetchone() or (0, "")
        _tokenize(env, second, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(second, newest_row(env))
        assert committed_head(env)[0] > reveal_id > erase_id
        # Step 1: one mismatch in B's unverified range: R's action reads 'erase' for one round.
        with as_owner(env) as owner:
            owner.execute("UPDATE vault.audit_log SET action = 'erase' WHERE id = %s", (reveal_id,))
        try:
            second.maintainer.check()
            unhealthy = not second.maintainer.healthy[DATABASE]
        finally:
            with as_owner(env) as owner:
                owner.execute("UPDATE vault.audit_log SET action = %s WHERE id = %s", (reveal_action, reveal_id))
        # Step 2: for the rebuilding round only, E's action reads 'reveal' (no hash recomputed, nothing relinked).
        with as_owner(env) as owner:
            owner.execute("UPDATE vault.audit_log SET action = 'reveal' WHERE id = %s", (erase_id,))
        try:
            second.maintainer.check()
            healthy_while_hidden = second.maintainer.healthy[DATABASE]
            cause = second.maintainer._causes.get(DATABASE, "")
            known_while_hidden = len(second.wired.vault.erased)
        finally:
            with as_owner(env) as owner:
                owner.execute("UPDATE vault.audit_log SET action = 'erase' WHERE id = %s", (erase_id,))
        for _ in range(3):  # later rounds, everything as signed
            second.maintainer.check()
        healthy_later = second.maintainer.healthy[DATABASE]
        known = len(second.wired.vault.erased)
        with as_owner(env) as owner:  # A43-3's write-back, for the length of one login
            owner.execute(_WRITE, (*(before or ()), token))
        try:
            on_b = _outcome(lambda: _tokenize(env, second, ip))
        finally:
            with as_owner(env) as owner:
                owner.execute(_WRITE, (*(after or ()), token))
    assert learned_at_start == 1
    assert unhealthy
    assert not healthy_while_hidden, "B went healthy on a rebuild read that lacks a committed erase row (A49-1)"
    assert "read again from the log's start" in cause and "0 erase row(s) where it signed 1" in cause, cause
    assert known_while_hidden == 1, "the unchecked rebuild read dropped the committed erasure (A49-1)"
    assert healthy_later, "put back: the rebuild matches and B is healthy again"
    assert known == 1, "B forgot the committed erasure (A49-1; old code: 0)"
    assert on_b != token, "B handed out the ERASED token (A49-1)"
    assert "DATA_LOSS" in str(on_b), on_b


def test_a49_1b_an_old_reveal_row_relabelled_for_the_rebuild_read_leaves_no_live_token_refused(
    own_database: dict[str, str],
) -> None:
    """The same rebuild, the other way (A44-3/A46-3 at a running replica).

    An OLD reveal row of a live token L, far below the verified head, relabelled `erase` (hash recomputed, next row
    relinked) for the rebuilding round only.
    """
    env = own_database
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(env, **FAST, TOKENVAULT_KEY_CHECK_SECONDS="3600") as second:
        live = _tokenize(env, second, ip)
        assert isinstance(live, str)
        assert getattr(_reveal(env, second, live), "value", None) == ip  # old row R0 names hash(L)
        with as_owner(env) as owner:
            (old_id, _) = owner.execute(_NEWEST_REVEAL).fetchone() or (0, "")
            owner.execute("SELECT setval('vault.audit_log_id_seq', %s)", (int(old_id) + 1500,))
        other = _tokenize(env, second, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        assert isinstance(other, str)
        wait_anchored(second, newest_row(env))
        second.maintainer.check()
        assert second.maintainer.healthy[DATABASE]
        _reveal(env, second, other)
        with as_owner(env) as owner:
            (reveal_id, reveal_action) = owner.execute(_NEWEST_REVEAL).fetchone() or (0, "")
        _tokenize(env, second, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(second, newest_row(env))
        with as_owner(env) as owner:  # step 1: one mismatch
            owner.execute("UPDATE vault.audit_log SET action = 'erase' WHERE id = %s", (reveal_id,))
        try:
            second.maintainer.check()
            unhealthy = not second.maintainer.healthy[DATABASE]
        finally:
            with as_owner(env) as owner:
                owner.execute("UPDATE vault.audit_log SET action = %s WHERE id = %s", (reveal_action, reveal_id))
        rows = relabel(env, int(old_id), "erase", rechain_to_head=False)  # step 2: R0 an erase row for one round
        try:
            second.maintainer.check()
            healthy_while_planted = second.maintainer.healthy[DATABASE]
            refused_while_planted = len(second.wired.vault.erased)
        finally:
            put_back(env, rows)
        for _ in range(3):
            second.maintainer.check()
        healthy = second.maintainer.healthy[DATABASE]
        refused_later = len(second.wired.vault.erased)
        on_b = _outcome(lambda: _tokenize(env, second, ip))
    assert unhealthy
    assert not healthy_while_planted, "B went healthy on a rebuild read holding an uncommitted erase row (A49-1b)"
    assert refused_while_planted == 0, "B learned the relabelled old reveal row from an unchecked read (A49-1b)"
    assert healthy
    assert refused_later == 0
    assert on_b == live, f"B refuses the live token (A49-1b; old code: DATA_LOSS for B's life): {on_b}"
