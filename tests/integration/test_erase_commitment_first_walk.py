"""An erase row changed before the upkeep's walk reached it is never signed into a commitment (review 47, R47-2).

The upkeep's commitment is computed from its own walk of the chain. The database owner relabelled a fresh erase row
`reveal` (hash recomputed, the rows after it re-chained) before the walk reached it: the writer's own append check
saw the row changed (ERROR), yet the same round signed a v2 checkpoint committing to the relabelled rows, and every
later start matched it (the erasure hidden for good). Now that process signs no commitment past that row.

Real OpenBao and PostgreSQL, in-process replicas, a database of each test's own.
"""

from __future__ import annotations

import time

from tests.conftest import running_vault
from tests.integration.audit_attacks import own_database
from tests.integration.erase_rows import committed_head, erased_new_token, newest_row, relabel, wait_anchored
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erased_tokens_known import _tokenize
from tokenvault_api.v1 import vault_pb2

__all__ = ["own_database"]

SLOW = {"TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "4"}
"""Rounds 4 s apart: the relabel lands between the erasure and the next round's walk."""


def test_an_erase_row_relabelled_before_the_walk_reached_it_is_never_committed_to(
    own_database: dict[str, str],
) -> None:
    env = own_database
    with running_vault(env, **SLOW) as first:
        _tokenize(env, first, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(first, newest_row(env), 12)
        _token, erase_id = erased_new_token(env, first, "GDPR-2026-4700")
        relabel(env, int(erase_id), "reveal", rechain_to_head=True)  # before the next round's walk
        _tokenize(env, first, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(first, newest_row(env), 12)
        _tokenize(env, first, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(first, newest_row(env), 12)  # a second round after the relabel: the rows then forgotten
        time.sleep(1)
        head, erasures = committed_head(env)
    # old code: a v2 checkpoint beyond the erase row counting 0 erase rows (the relabel endorsed)
    assert not (head > int(erase_id) and erasures == 0), (head, erasures, erase_id)
