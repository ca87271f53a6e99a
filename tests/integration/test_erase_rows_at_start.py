"""What a replica's start-up read of the erase rows makes of rows the owner changed only while it starts (attack 46).

A46-1: the read selected `action = 'erase' AND outcome LIKE 'ok:%'`. The owner prefixed an old erase row's outcome
while replica B started and put it back after B's first key-check round (its reads then start near the anchored head):
B never read, reported nor retried the row, never learned the erasure, and handed the ERASED token out after the
owner's write-back (A43-3). The read now selects by the action alone: the changed row no longer hashes to its fields,
is reported and read again each round until it holds, so B learns the erasure once the row is put back.

A46-3: an old reveal row relabelled as a well-hashed erase row while B starts made B refuse the live token. A row a
signed checkpoint covers is now checked against its commitment to the erase rows and refuses B's start
(tests/integration/test_erase_commitment.py); in the unanchored tail (no checkpoint covers it yet, as here) B still
refuses the live token, and B's log names that record, so the false alarm can be told from an undone erasure (`audit
verify` finds no erase row there).

Real OpenBao and PostgreSQL, in-process replicas, a database of each test's own.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, erase, own_database
from tests.integration.erase_rows import FAST, UNANCHORED, newest_row, wait_anchored
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erased_tokens_known import _reveal, _tokenize
from tokenvault_api.v1 import vault_pb2
from vault_service.adapters.postgres.audit_records import RECORD_COLUMNS, audit_record, record_cursor
from vault_service.domain.audit import record_hash
from vault_service.service import erased_tokens

__all__ = ["own_database"]


def _outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception as error:  # the client's typed error: its name and status
        return f"{type(error).__name__}: {str(error)[:90]}"


def test_an_erase_row_whose_outcome_is_changed_while_a_replica_starts_is_learned_once_put_back(
    own_database: dict[str, str],
) -> None:
    env = own_database
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(env, **FAST) as first:
        token = _tokenize(env, first, ip)
        assert isinstance(token, str)
        with as_owner(env) as owner:
            before = owner.execute(
                "SELECT sealed, fingerprint, next_fingerprint, erased_at FROM vault.tokens WHERE token = %s", (token,)
            ).fetchone()
        assert erase(env, first, [token], "GDPR-2026-4646") == [None]
        with as_owner(env) as owner:
            after = owner.execute(
                "SELECT sealed, fingerprint, next_fingerprint, erased_at FROM vault.tokens WHERE token = %s", (token,)
            ).fetchone()
            (erase_id,) = owner.execute(
                "SELECT id FROM vault.audit_log WHERE action = 'erase' ORDER BY id DESC LIMIT 1"
            ).fetchone() or (0,)
            owner.execute("SELECT setval('vault.audit_log_id_seq', %s)", (int(erase_id) + 1500,))  # a month of rows
        other = _tokenize(env, first, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        assert isinstance(other, str)
        _reveal(env, first, other)  # a genuine later row
        assert newest_row(env) > erase_id + 1000
        wait_anchored(first, newest_row(env))
        with as_owner(env) as owner:  # while B starts, E's outcome does not read 'ok:'
            owner.execute("UPDATE vault.audit_log SET outcome = 'x' || outcome WHERE id = %s", (erase_id,))
        try:
            with running_vault(env, **FAST) as second:
                wait_anchored(second, newest_row(env))
                second.maintainer.check()  # B's first round: its window moves past E
                with as_owner(env) as owner:  # put back
                    owner.execute("UPDATE vault.audit_log SET outcome = substr(outcome, 2) WHERE id = %s", (erase_id,))
                for _ in range(2):
                    second.maintainer.check()
                learned = len(second.wired.vault.erased)
                with as_owner(env) as owner:  # A43-3's write-back for the length of one login
                    owner.execute(
                        "UPDATE vault.tokens SET sealed = %s, fingerprint = %s, next_fingerprint = %s, erased_at = %s"
                        " WHERE token = %s",
                        (*(before or ()), token),
                    )
                on_b = _outcome(lambda: _tokenize(env, second, ip))
                with as_owner(env) as owner:
                    owner.execute(
                        "UPDATE vault.tokens SET sealed = %s, fingerprint = %s, next_fingerprint = %s, erased_at = %s"
                        " WHERE token = %s",
                        (*(after or ()), token),
                    )
        finally:
            with as_owner(env) as owner:  # idempotent
                owner.execute(
                    "UPDATE vault.audit_log SET outcome = substr(outcome, 2) WHERE id = %s AND outcome LIKE 'xok:%%'",
                    (erase_id,),
                )
    assert learned == 1, f"B did not learn the erasure (old code: 0 for good): {learned}"
    assert on_b != token, "B handed out the ERASED token"
    assert "DATA_LOSS" in str(on_b), on_b


def test_a_reveal_row_relabelled_while_a_replica_starts_is_named_when_the_token_is_refused(
    own_database: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    env = own_database
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(env, **UNANCHORED) as first:
        token = _tokenize(env, first, ip)
        assert isinstance(token, str)
        assert getattr(_reveal(env, first, token), "value", None) == ip  # row R names hash(T)
        with as_owner(env) as owner:
            row = (
                record_cursor(owner)
                .execute(
                    f"SELECT {RECORD_COLUMNS} FROM vault.audit_log WHERE cardinality(revealed) = 1"
                    " AND action <> 'erase' ORDER BY id DESC LIMIT 1"
                )
                .fetchone()
            )
            assert row is not None
            genuine = audit_record(row)
            owner.execute("SELECT setval('vault.audit_log_id_seq', %s)", (genuine.record_id + 1500,))
        _reveal(env, first, _tokenize(env, first, fresh_value(vault_pb2.TOKEN_TYPE_IP)))  # type: ignore[arg-type]
        forged = record_hash(dataclasses.replace(genuine, event=dataclasses.replace(genuine.event, action="erase")))
        with as_owner(env) as owner:
            (next_id,) = owner.execute(
                "SELECT min(id) FROM vault.audit_log WHERE id > %s", (genuine.record_id,)
            ).fetchone() or (0,)
            owner.execute(
                "UPDATE vault.audit_log SET action = 'erase', row_hash = %s WHERE id = %s", (forged, genuine.record_id)
            )
            owner.execute("UPDATE vault.audit_log SET prev_hash = %s WHERE id = %s", (forged, next_id))
        try:
            with running_vault(env, **FAST) as second:
                with as_owner(env) as owner:  # put back at once
                    owner.execute(
                        "UPDATE vault.audit_log SET action = %s, row_hash = %s WHERE id = %s",
                        (genuine.event.action, genuine.row_hash, genuine.record_id),
                    )
                    owner.execute(
                        "UPDATE vault.audit_log SET prev_hash = %s WHERE id = %s", (genuine.row_hash, next_id)
                    )
                with caplog.at_level(logging.ERROR, logger="vault_service.service.erased_tokens"):
                    on_b = _outcome(lambda: _tokenize(env, second, ip))
        finally:
            with as_owner(env) as owner:
                owner.execute(
                    "UPDATE vault.audit_log SET action = %s, row_hash = %s WHERE id = %s",
                    (genuine.event.action, genuine.row_hash, genuine.record_id),
                )
                owner.execute("UPDATE vault.audit_log SET prev_hash = %s WHERE id = %s", (genuine.row_hash, next_id))
    assert "DATA_LOSS" in str(on_b), on_b  # in the unanchored tail the live token is still refused (A46-3's Left)
    named = [r for r in caplog.records if getattr(r, "erase_records", None)]
    assert named, "the refusal's log line names no erase record"
    assert named[0].erase_records == [genuine.record_id]  # type: ignore[attr-defined]
    assert f"erase record(s) {genuine.record_id}" in named[0].getMessage()


def test_erase_rows_cleared_or_broken_in_numbers_while_a_replica_starts_are_all_learned_once_put_back(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """E1's `revealed` cleared (the read selected only rows naming tokens: E1 never read), E2 and E3's outcomes
    prefixed, with more rows failing than are retried per round (RETRIED_ROWS, 1 here for 64: the oldest beyond it
    were dropped for good). Once put back, B learns all three within three rounds."""
    monkeypatch.setattr(erased_tokens, "RETRIED_ROWS", 1)
    env = own_database
    with running_vault(env, **FAST) as first:
        tokens = [_tokenize(env, first, fresh_value(vault_pb2.TOKEN_TYPE_IP)) for _ in range(3)]
        ids = []
        for token in tokens:
            assert isinstance(token, str)
            assert erase(env, first, [token], "GDPR-2026-4647") == [None]
            with as_owner(env) as owner:
                (erase_id,) = owner.execute(
                    "SELECT id FROM vault.audit_log WHERE action = 'erase' ORDER BY id DESC LIMIT 1"
                ).fetchone() or (0,)
            ids.append(int(erase_id))
        with as_owner(env) as owner:
            owner.execute("SELECT setval('vault.audit_log_id_seq', %s)", (ids[-1] + 1500,))  # a month of rows
            (revealed,) = owner.execute("SELECT revealed FROM vault.audit_log WHERE id = %s", (ids[0],)).fetchone() or (
                None,
            )
        _reveal(env, first, _tokenize(env, first, fresh_value(vault_pb2.TOKEN_TYPE_IP)))  # type: ignore[arg-type]
        wait_anchored(first, newest_row(env))
        with as_owner(env) as owner:
            owner.execute("UPDATE vault.audit_log SET revealed = NULL WHERE id = %s", (ids[0],))
            owner.execute("UPDATE vault.audit_log SET outcome = 'x' || outcome WHERE id = ANY(%s)", (ids[1:],))

        def put_back() -> None:
            with as_owner(env) as owner:
                owner.execute("UPDATE vault.audit_log SET revealed = %s WHERE id = %s", (revealed, ids[0]))
                owner.execute(
                    "UPDATE vault.audit_log SET outcome = substr(outcome, 2) WHERE id = ANY(%s) AND outcome LIKE 'x%%'",
                    (ids[1:],),
                )

        try:
            with running_vault(env, **FAST) as second:
                wait_anchored(second, newest_row(env))
                second.maintainer.check()  # B's first round: its window moves past the three rows
                put_back()
                for _ in range(3):
                    second.maintainer.check()
                learned = len(second.wired.vault.erased)
        finally:
            put_back()
    assert learned == 3, f"B learned {learned} of the 3 erasures (old code: 1)"
