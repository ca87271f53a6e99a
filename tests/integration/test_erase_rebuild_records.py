"""A matched rebuild weighs every erase record a token hash was learned from, with its stored hash (attack 51).

A51-1: the database owner forged a signed erase row E for one key-check round to name a live token L's hash (its row
hash recomputed, the next row relinked): the replica learned hash(L) from E and the round's commitment check
mismatched. For the rebuilding read E showed its genuine (signed) stored hash with one field changed: the read
matched, E failed - and a hash learned from a failing row was kept, hash(L) included: L refused (DATA_LOSS) for the
replica's life, the replica healthy. Now hash(L) was learned under another stored hash than the signed one: dropped.

A51-2: T's old reveal row relabelled `erase` for the round that first read another replica's erase row E of T made the
reveal row T's (only) record; in the rebuild E's fields were changed (its stored hash kept): the read matched, T's
record was neither read nor failing, and T was dropped - the healthy replica handed the ERASED token out after the
owner wrote T's row back (A43-3). Now every record counts: E, failing with the stored hash T was learned under,
keeps it.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, erase, own_database
from tests.integration.erase_rows import FAST, committed_head, newest_row, put_back, relabel, rows_from, wait_anchored
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erase_rows_at_start import _outcome
from tests.integration.test_erased_tokens_known import _reveal, _tokenize
from tokenvault_api.v1 import vault_pb2
from vault_service.domain.audit import AuditRecord, record_hash
from vault_service.service.maintenance import DATABASE

__all__ = ["own_database"]

_SET = "UPDATE vault.audit_log SET revealed = %s, outcome = %s, prev_hash = %s, row_hash = %s WHERE id = %s"
_LAST_REVEALED = (
    "SELECT id, revealed[1] FROM vault.audit_log WHERE action <> 'erase' AND cardinality(revealed) = 1"
    " ORDER BY id DESC LIMIT 1"
)
_LAST_ERASE = "SELECT id FROM vault.audit_log WHERE action = 'erase' ORDER BY id DESC LIMIT 1"
_CHANGE_OUTCOME = "UPDATE vault.audit_log SET outcome = outcome || ' ' WHERE id = %s"
_ROW = "SELECT sealed, fingerprint, next_fingerprint, erased_at FROM vault.tokens WHERE token = %s"
_WRITE_ROW = (
    "UPDATE vault.tokens SET sealed = %s, fingerprint = %s, next_fingerprint = %s, erased_at = %s WHERE token = %s"
)


def _write(env: dict[str, str], records: list[AuditRecord]) -> None:
    """The owner writes these rows' named tokens, outcome and hashes (a forgery, or the rows put back)."""
    with as_owner(env) as owner:
        for r in records:
            owner.execute(_SET, (list(r.event.revealed), r.event.outcome, r.prev_hash, r.row_hash, r.record_id))


@pytest.mark.parametrize("fail_in_rebuild", [True, False])
def test_a_live_token_learned_from_a_forged_signed_erase_row_is_dropped_when_that_row_fails_the_rebuild(
    own_database: dict[str, str], fail_in_rebuild: bool
) -> None:
    """A51-1 (`[True]`; `[False]`: E put back whole for the rebuild): L served, B healthy, T still known erased."""
    env = own_database
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(env, **FAST, TOKENVAULT_KEY_CHECK_SECONDS="3600") as b:
        live = _tokenize(env, b, ip)
        assert isinstance(live, str)
        assert getattr(_reveal(env, b, live), "value", None) == ip
        with as_owner(env) as owner:
            (_, live_hash) = owner.execute(_LAST_REVEALED).fetchone() or (0, b"")
        _tokenize(env, b, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(b, newest_row(env))
        b.maintainer.check()
        assert b.maintainer.healthy[DATABASE]
        commitments = b.maintainer._commitments
        assert commitments is not None
        verified = commitments.verified_head
        erased_token = _tokenize(env, b, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        assert isinstance(erased_token, str)
        assert erase(env, b, [erased_token], "GDPR-2026-5111") == [None]
        with as_owner(env) as owner:
            (erase_id,) = owner.execute(_LAST_ERASE).fetchone() or (0,)
        _tokenize(env, b, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(b, newest_row(env))
        assert committed_head(env)[0] > erase_id > verified
        original = rows_from(env, erase_id)[:2]
        e, after_e = original
        forged = dataclasses.replace(
            e, event=dataclasses.replace(e.event, revealed=(bytes(live_hash),)), revealed_sent=None
        )
        forged = dataclasses.replace(forged, row_hash=record_hash(forged))
        relinked = dataclasses.replace(after_e, prev_hash=forged.row_hash)
        relinked = dataclasses.replace(relinked, row_hash=record_hash(relinked))
        _write(env, [forged, relinked])  # one round: E names L, the chain holds where B looks
        try:
            b.maintainer.check()
            assert not b.maintainer.healthy[DATABASE]  # the round's commitment check mismatched: rebuild pending
            assert bytes(live_hash) in b.wired.vault.erased._hashes
        finally:
            _write(env, original)
        if fail_in_rebuild:  # E's signed stored hash back, one field changed: selected, failing, the tally matches
            with as_owner(env) as owner:
                owner.execute(_CHANGE_OUTCOME, (erase_id,))
        try:
            b.maintainer.check()
        finally:
            _write(env, original)
        for _ in range(3):
            b.maintainer.check()
        healthy = b.maintainer.healthy[DATABASE]
        known = dict(b.wired.vault.erased._hashes)
        on_b = _outcome(lambda: _tokenize(env, b, ip))
    assert healthy, b.maintainer._causes.get(DATABASE, "")
    assert bytes(live_hash) not in known, "the live token's hash, learned from the forged row, was kept (old code)"
    assert on_b == live, f"the live token is refused: {on_b}"
    assert len(known) == 1  # T, erased through B: still known


def test_an_erasure_first_learned_from_a_relabelled_reveal_row_is_kept_while_its_signed_erase_row_fails(
    own_database: dict[str, str],
) -> None:
    """A51-2: T stays known erased through the rebuild and after E is put back; T is never handed out again."""
    env = own_database
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(env, **FAST, TOKENVAULT_KEY_CHECK_SECONDS="3600") as b:
        token = _tokenize(env, b, ip)
        assert isinstance(token, str)
        assert getattr(_reveal(env, b, token), "value", None) == ip
        with as_owner(env) as owner:
            (reveal_id, token_hash) = owner.execute(_LAST_REVEALED).fetchone() or (0, b"")
            before = owner.execute(_ROW, (token,)).fetchone()
        token_hash = bytes(token_hash)
        _tokenize(env, b, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        with running_vault(env, **FAST) as a:  # another replica erases T
            assert erase(env, a, [token], "GDPR-2026-5112") == [None]
            with as_owner(env) as owner:
                (erase_id,) = owner.execute(_LAST_ERASE).fetchone() or (0,)
                after = owner.execute(_ROW, (token,)).fetchone()
            _tokenize(env, b, fresh_value(vault_pb2.TOKEN_TYPE_IP))
            wait_anchored(b, newest_row(env))
        assert committed_head(env)[0] > erase_id > reveal_id
        original = rows_from(env, erase_id)[:1]
        rows = relabel(env, int(reveal_id), "erase", rechain_to_head=False)  # one round: the reveal row reads first
        try:
            b.maintainer.check()
            assert not b.maintainer.healthy[DATABASE]
            assert b.wired.vault.erased._hashes.get(token_hash) == reveal_id  # its first record: the reveal row
        finally:
            put_back(env, rows)
        with as_owner(env) as owner:  # E fails from now on, its signed stored hash kept
            owner.execute(_CHANGE_OUTCOME, (erase_id,))
        try:
            for _ in range(3):
                b.maintainer.check()
            known = dict(b.wired.vault.erased._hashes)
            with as_owner(env) as owner:  # A43-3's write-back of T's row
                owner.execute(_WRITE_ROW, (*(before or ()), token))
            try:
                on_b = _outcome(lambda: _tokenize(env, b, ip))
            finally:
                with as_owner(env) as owner:
                    owner.execute(_WRITE_ROW, (*(after or ()), token))
        finally:
            _write(env, original)
        b.maintainer.check()
        b.maintainer.check()
        known_after = dict(b.wired.vault.erased._hashes)
        healthy_after = b.maintainer.healthy[DATABASE]
    assert token_hash in known, "the signed erasure was forgotten while its erase row failed (old code)"
    assert on_b != token, "the ERASED token was handed out"
    assert "DATA_LOSS" in str(on_b), on_b
    assert token_hash in known_after
    assert healthy_after, "B unhealthy after every row was put back"
