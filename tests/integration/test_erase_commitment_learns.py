"""A round's matching commitment check learns the signed erase rows the replica never learned (attack 51, A51-3).

The database owner nulled erase_count/erase_digest on every stored checkpoint (two plain UPDATEs: no signed commitment
left for a start-up read to be checked against) and relabelled an old erase row E `reveal` for the length of a new
replica's start-up read and first key-check round (after which its reads start near the anchored head), then put E
back. The replica's own upkeep then signed a commitment counting E and its round check matched - and learned nothing
from that read: the replica stayed healthy without E's token and, after the owner wrote the token's row back (A43-3),
handed the ERASED token out. Now the matching check learns the rows it read that hold and name an unknown token.
"""

from __future__ import annotations

import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, erase, own_database
from tests.integration.erase_rows import FAST, committed_head, newest_row, wait_anchored
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erase_rows_at_start import _outcome
from tests.integration.test_erased_tokens_known import _tokenize
from tokenvault_api.v1 import vault_pb2
from vault_service.service.maintenance import DATABASE

__all__ = ["own_database"]

_ROW = "SELECT sealed, fingerprint, next_fingerprint, erased_at FROM vault.tokens WHERE token = %s"
_WRITE_ROW = (
    "UPDATE vault.tokens SET sealed = %s, fingerprint = %s, next_fingerprint = %s, erased_at = %s WHERE token = %s"
)


@pytest.mark.parametrize("hidden_past_first_round", [False, True])
def test_an_old_erase_row_hidden_from_an_unchecked_start_is_learned_by_the_matching_round_check(
    own_database: dict[str, str], hidden_past_first_round: bool
) -> None:
    """E hidden for B's start (and first round, or not): B learns E by its own matching check; T refused, B healthy."""
    env = own_database
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(env, **FAST) as first:
        token = _tokenize(env, first, ip)
        assert isinstance(token, str)
        with as_owner(env) as owner:
            before = owner.execute(_ROW, (token,)).fetchone()
        assert erase(env, first, [token], "GDPR-2026-5103") == [None]
        with as_owner(env) as owner:
            after = owner.execute(_ROW, (token,)).fetchone()
            newest_erase = owner.execute(
                "SELECT id FROM vault.audit_log WHERE action = 'erase' ORDER BY id DESC LIMIT 1"
            ).fetchone()
            assert newest_erase is not None
            erase_id = int(newest_erase[0])
            owner.execute("SELECT setval('vault.audit_log_id_seq', %s)", (erase_id + 1500,))  # E far back
        _tokenize(env, first, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(first, newest_row(env))
    assert committed_head(env)[0] > erase_id
    with as_owner(env) as owner:
        owner.execute("UPDATE vault.audit_checkpoints SET erase_count = NULL, erase_digest = NULL")
        owner.execute("UPDATE vault.audit_log SET action = 'reveal' WHERE id = %s", (erase_id,))
    with running_vault(env, **FAST, TOKENVAULT_KEY_CHECK_SECONDS="3600") as b:
        assert len(b.wired.vault.erased) == 0  # the start-up read was checked against nothing: E unseen
        _tokenize(env, b, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(b, newest_row(env))
        if hidden_past_first_round:
            b.maintainer.check()  # the learn window moves near the anchored head: E is never read by it again
        with as_owner(env) as owner:
            owner.execute("UPDATE vault.audit_log SET action = 'erase' WHERE id = %s", (erase_id,))
        _tokenize(env, b, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(b, newest_row(env))  # B's own upkeep signs a commitment counting E, put back
        assert committed_head(env)[0] > erase_id
        for _ in range(3):
            b.maintainer.check()
        assert b.maintainer.healthy[DATABASE], b.maintainer._causes.get(DATABASE, "")
        assert len(b.wired.vault.erased) == 1
        with as_owner(env) as owner:
            owner.execute(_WRITE_ROW, (*(before or ()), token))  # A43-3: the erased token's row written back
        try:
            on_b = _outcome(lambda: _tokenize(env, b, ip))
        finally:
            with as_owner(env) as owner:
                owner.execute(_WRITE_ROW, (*(after or ()), token))
    assert on_b != token, "the ERASED token was handed out"
    assert not isinstance(on_b, str) or not on_b.startswith("tv"), on_b
