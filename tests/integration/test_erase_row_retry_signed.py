"""Attack 50, A50-3/A50-3b: an erase row that did not hold is learned, when read again, only as the signed row.

The one-by-one retry of an erase row that did not hold is read by id, counted against no signed commitment. The
database owner made another replica's fresh erase row E fail for B's first read of it (one field changed, stored
hash kept: the signed tally still matched), waited until B's window had moved past E, then - for the one round that
retried E - showed E naming a LIVE token's hash (revealed copied from a reveal row of L, E's hash recomputed, the
next row's prev_hash relinked), and put everything back: B learned hash(L) from the forged E, never hash(T), and
never read E again - it refused the live token L and, after A43-3's write-back of T's row, handed the ERASED token T
out, healthy throughout. A50-3b: the same at a replica's start for an OLD committed erase row, shown as an erasure
of nothing for the retrying round.

Now the stored row hash a failing row showed to a read counted into a matching signed commitment is kept, and a
later read of that row is learned only when it shows that hash (and holds): the forged row is not learned, named at
ERROR, the replica unhealthy while it stands; put back, the genuine row is learned.
"""

from __future__ import annotations

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, erase, own_database
from tests.integration.erase_rows import FAST, newest_row, rows_from, wait_anchored
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erase_rows_at_start import _outcome
from tests.integration.test_erased_tokens_known import _reveal, _tokenize
from tokenvault_api.v1 import vault_pb2
from vault_service.domain.audit import record_hash
from vault_service.service.maintenance import DATABASE

__all__ = ["own_database"]

_ROW = "SELECT sealed, fingerprint, next_fingerprint, erased_at FROM vault.tokens WHERE token = %s"
_WRITE = "UPDATE vault.tokens SET sealed = %s, fingerprint = %s, next_fingerprint = %s, erased_at = %s WHERE token = %s"


def test_a50_3_a_retried_erase_row_forged_for_its_retry_is_not_learned_and_the_genuine_row_is(
    own_database: dict[str, str],
) -> None:
    env = own_database
    ip, live_ip = fresh_value(vault_pb2.TOKEN_TYPE_IP), fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(env, **FAST, TOKENVAULT_KEY_CHECK_SECONDS="3600") as second:
        live = _tokenize(env, second, live_ip)
        assert isinstance(live, str)
        _reveal(env, second, live)
        with as_owner(env) as owner:
            (live_row,) = owner.execute(
                "SELECT id FROM vault.audit_log WHERE cardinality(revealed) = 1 AND action <> 'erase'"
                " ORDER BY id DESC LIMIT 1"
            ).fetchone() or (0,)
        second.maintainer.check()
        assert second.maintainer.healthy[DATABASE]
        with running_vault(env, **FAST) as first:  # replica A erases T
            token = _tokenize(env, first, ip)
            assert isinstance(token, str)
            with as_owner(env) as owner:
                before = owner.execute(_ROW, (token,)).fetchone()
            assert erase(env, first, [token], "GDPR-2026-5003") == [None]
            with as_owner(env) as owner:
                after = owner.execute(_ROW, (token,)).fetchone()
                (erase_id, purpose) = owner.execute(
                    "SELECT id, purpose FROM vault.audit_log WHERE action = 'erase' ORDER BY id DESC LIMIT 1"
                ).fetchone() or (0, "")
            _tokenize(env, second, fresh_value(vault_pb2.TOKEN_TYPE_IP))
            wait_anchored(second, newest_row(env))  # both upkeeps walked E as it is: no R47-2 hold
            wait_anchored(first, newest_row(env))
        # Step 1: E does not hold for B's first read of it (a field changed, its stored hash kept).
        with as_owner(env) as owner:
            owner.execute("UPDATE vault.audit_log SET purpose = purpose || 'x' WHERE id = %s", (erase_id,))
        second.maintainer.check()
        print(f"A50-3: after B's first read of E: verified head {_verified_head(second)}")
        failing_after_first_read = erase_id in second.wired.vault.erased._failing
        with as_owner(env) as owner:  # the window moves past E (a month of rows), E still not holding
            owner.execute("SELECT setval('vault.audit_log_id_seq', %s)", (int(erase_id) + 1500,))
        _tokenize(env, second, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(second, newest_row(env))
        second.maintainer.check()  # a round verifying a checkpoint past E (E counted by its stored hash: matches)
        verified = _verified_head(second)
        print(f"A50-3: verified head {verified}, E {erase_id}, healthy {second.maintainer.healthy[DATABASE]}")
        with as_owner(env) as owner:
            owner.execute("UPDATE vault.audit_log SET purpose = %s WHERE id = %s", (purpose, erase_id))
        # Step 2: for the retrying round only, E names hash(L): revealed copied, hash recomputed, next row relinked.
        original = rows_from(env, int(erase_id))[:2]
        with as_owner(env) as owner:
            owner.execute(
                "CREATE TABLE public.a50_saved AS SELECT id, revealed FROM vault.audit_log WHERE id = %s", (erase_id,)
            )
            owner.execute(
                "UPDATE vault.audit_log SET revealed = (SELECT revealed FROM vault.audit_log WHERE id = %s)"
                " WHERE id = %s",
                (live_row, erase_id),
            )
        forged = rows_from(env, int(erase_id))[0]
        new_hash = record_hash(forged)
        with as_owner(env) as owner:
            owner.execute("UPDATE vault.audit_log SET row_hash = %s WHERE id = %s", (new_hash, erase_id))
            owner.execute("UPDATE vault.audit_log SET prev_hash = %s WHERE id = %s", (new_hash, original[1].record_id))
        try:
            second.maintainer.check()
            healthy_while_forged = second.maintainer.healthy[DATABASE]
            failing_while_forged = erase_id in second.wired.vault.erased._failing
        finally:
            _restore(env, original, erase_id)
        for _ in range(3):
            second.maintainer.check()
        healthy = second.maintainer.healthy[DATABASE]
        failing_later = erase_id in second.wired.vault.erased._failing
        on_live = _outcome(lambda: _tokenize(env, second, live_ip))
        with as_owner(env) as owner:  # A43-3's write-back, for the length of one login
            owner.execute(_WRITE, (*(before or ()), token))
        try:
            on_erased = _outcome(lambda: _tokenize(env, second, ip))
        finally:
            with as_owner(env) as owner:
                owner.execute(_WRITE, (*(after or ()), token))
    print(
        f"A50-3: E failing after B's first read: {failing_after_first_read}; while forged: failing"
        f" {failing_while_forged}, B healthy {healthy_while_forged}; later: failing {failing_later}, B healthy"
        f" {healthy}; B on L's value: {'L' if on_live == live else on_live};"
        f" B on T's value after the write-back: {'T (ERASED)' if on_erased == token else on_erased}"
    )
    assert failing_after_first_read
    assert failing_while_forged and not healthy_while_forged  # the forged row not learned, the replica unhealthy
    assert not failing_later and healthy  # the genuine row, put back, learned
    assert on_live == live  # the live token still handed out
    assert "DATA_LOSS" in str(on_erased), on_erased  # the erased token refused after the write-back


def _verified_head(vault: object) -> int:
    """The head of the newest checkpoint whose erase-row commitment the replica's reads matched."""
    return int(vault.maintainer._commitments.verified_head)  # type: ignore[attr-defined]


def _restore(env: dict[str, str], original: list, erase_id: int) -> None:  # type: ignore[type-arg]
    """E's revealed/row_hash and the next row's prev_hash as they were."""
    e, nxt = original
    with as_owner(env) as owner:
        owner.execute(
            "UPDATE vault.audit_log AS a SET revealed = s.revealed FROM public.a50_saved AS s WHERE a.id = s.id"
        )
        owner.execute("DROP TABLE public.a50_saved")
        owner.execute("UPDATE vault.audit_log SET row_hash = %s WHERE id = %s", (e.row_hash, erase_id))
        owner.execute("UPDATE vault.audit_log SET prev_hash = %s WHERE id = %s", (nxt.prev_hash, nxt.record_id))


def test_a50_3b_a_starting_replica_learns_an_old_committed_erase_row_only_as_signed(
    own_database: dict[str, str],
) -> None:
    """The same at a replica's start, for an OLD committed erase row E: one field of E changed (stored hash kept) for
    the start-up read - its tally matches, E is not learned, B starts; E forged as an erasure of nothing (`revealed`
    '{}', hash recomputed, next row relinked) for the one round that retries it: not learned, B unhealthy; then E
    relabelled for one round (no erase row at all): still failing, B unhealthy; put back: E learned."""
    env = own_database
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(env, **FAST) as first:
        token = _tokenize(env, first, ip)
        assert isinstance(token, str)
        with as_owner(env) as owner:
            before = owner.execute(_ROW, (token,)).fetchone()
        assert erase(env, first, [token], "GDPR-2026-5004") == [None]
        with as_owner(env) as owner:
            after = owner.execute(_ROW, (token,)).fetchone()
            (erase_id, purpose) = owner.execute(
                "SELECT id, purpose FROM vault.audit_log WHERE action = 'erase' ORDER BY id DESC LIMIT 1"
            ).fetchone() or (0, "")
            owner.execute("SELECT setval('vault.audit_log_id_seq', %s)", (int(erase_id) + 1500,))  # a month of rows
        _tokenize(env, first, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(first, newest_row(env))
    with as_owner(env) as owner:  # for B's start-up read only
        owner.execute("UPDATE vault.audit_log SET purpose = purpose || 'x' WHERE id = %s", (erase_id,))
    with running_vault(env, **FAST, TOKENVAULT_KEY_CHECK_SECONDS="3600") as second:
        learned_at_start = len(second.wired.vault.erased)
        _tokenize(env, second, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(second, newest_row(env))
        with as_owner(env) as owner:
            owner.execute("UPDATE vault.audit_log SET purpose = %s WHERE id = %s", (purpose, erase_id))
        original = rows_from(env, int(erase_id))[:2]
        with as_owner(env) as owner:
            owner.execute(
                "CREATE TABLE public.a50_saved AS SELECT id, revealed FROM vault.audit_log WHERE id = %s", (erase_id,)
            )
            owner.execute("UPDATE vault.audit_log SET revealed = '{}' WHERE id = %s", (erase_id,))
        new_hash = record_hash(rows_from(env, int(erase_id))[0])
        with as_owner(env) as owner:
            owner.execute("UPDATE vault.audit_log SET row_hash = %s WHERE id = %s", (new_hash, erase_id))
            owner.execute("UPDATE vault.audit_log SET prev_hash = %s WHERE id = %s", (new_hash, original[1].record_id))
        try:
            second.maintainer.check()
            healthy_while_forged = second.maintainer.healthy[DATABASE]
        finally:
            _restore(env, original, erase_id)
        with as_owner(env) as owner:  # E no erase row for one round: a signed erase row is not dropped
            owner.execute("UPDATE vault.audit_log SET action = 'reveal' WHERE id = %s", (erase_id,))
        try:
            second.maintainer.check()
            healthy_while_relabelled = second.maintainer.healthy[DATABASE]
            failing_while_relabelled = erase_id in second.wired.vault.erased._failing
        finally:
            with as_owner(env) as owner:
                owner.execute("UPDATE vault.audit_log SET action = 'erase' WHERE id = %s", (erase_id,))
        for _ in range(3):
            second.maintainer.check()
        healthy = second.maintainer.healthy[DATABASE]
        known = len(second.wired.vault.erased)
        failing_later = erase_id in second.wired.vault.erased._failing
        with as_owner(env) as owner:
            owner.execute(_WRITE, (*(before or ()), token))
        try:
            on_erased = _outcome(lambda: _tokenize(env, second, ip))
        finally:
            with as_owner(env) as owner:
                owner.execute(_WRITE, (*(after or ()), token))
    print(
        f"A50-3b: learned at start {learned_at_start}; healthy while forged {healthy_while_forged}, while relabelled"
        f" {healthy_while_relabelled} (failing {failing_while_relabelled}); later known {known}, E failing"
        f" {failing_later}, healthy {healthy}; B on T's value after the write-back:"
        f" {'T (ERASED)' if on_erased == token else on_erased}"
    )
    assert learned_at_start == 0
    assert not healthy_while_forged
    assert failing_while_relabelled and not healthy_while_relabelled
    assert known == 1 and not failing_later and healthy
    assert "DATA_LOSS" in str(on_erased), on_erased
