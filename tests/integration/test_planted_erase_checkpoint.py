"""A committed checkpoint the vault's own database role planted is passed over, not fatal (review 47, R47-6).

The insert trigger of vault.audit_checkpoints checks a row's head, count and time - all readable by the serving role
(tokenvault_vault, which may INSERT there) - never its signature. One row with a made-up signature and an erase-row
commitment at the log's head turned every running replica NOT_SERVING and refused every start. Now it is logged and
counted as planted, and the newest genuine checkpoint is checked instead.

Real OpenBao and PostgreSQL, in-process replicas, a database of each test's own.
"""

from __future__ import annotations

import logging

import psycopg
import pytest

from tests.conftest import running_vault
from tests.integration.audit_attacks import own_database
from tests.integration.erase_rows import FAST, newest_row, wait_anchored
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erased_tokens_known import _tokenize
from tokenvault_api.v1 import vault_pb2
from vault_service.entrypoints.metrics import AUDIT_CHECKPOINT_PLANTED
from vault_service.service.maintenance import DATABASE

__all__ = ["own_database"]

PLANT_AT_THE_HEAD = (
    "INSERT INTO vault.audit_checkpoints (head_id, head_hash, row_count, at, key_name, signature, erase_count,"
    " erase_digest)"
    " SELECT a.id, a.row_hash,"
    "  (SELECT c.row_count FROM vault.audit_checkpoints c ORDER BY c.head_id DESC LIMIT 1)"
    "  + (SELECT count(*) FROM vault.audit_log b"
    "     WHERE b.id > (SELECT max(head_id) FROM vault.audit_checkpoints) AND b.id <= a.id),"
    "  clock_timestamp(), 'tokenvault-audit', 'vault:v1:planted', 0, pg_catalog.decode(repeat('00', 32), 'hex')"
    " FROM vault.audit_log a ORDER BY a.id DESC LIMIT 1"
)
"""The serving role's plant: a v2 checkpoint at the log's head, its count right, its signature made up."""


def test_a_checkpoint_the_serving_role_planted_is_passed_over_logged_and_counted(
    own_database: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    env = own_database
    with running_vault(env, **FAST) as replica:
        _tokenize(env, replica, fresh_value(vault_pb2.TOKEN_TYPE_IP))
        wait_anchored(replica, newest_row(env))
        replica.maintainer.check()
        assert replica.maintainer.healthy[DATABASE]
        _tokenize(env, replica, fresh_value(vault_pb2.TOKEN_TYPE_IP))  # a row beyond the last checkpoint
        with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as vault_role:
            vault_role.execute(PLANT_AT_THE_HEAD)
            planted = newest_row(env)
        counted = AUDIT_CHECKPOINT_PLANTED._value.get()
        with caplog.at_level(logging.ERROR):
            replica.maintainer.check()
        healthy = replica.maintainer.healthy[DATABASE]
        cause = replica.maintainer._causes.get(DATABASE, "")
        with running_vault(env, **FAST) as second:  # old code: EraseRowsUncommitted, exit 1
            second.maintainer.check()
            assert second.maintainer.healthy[DATABASE]
    assert healthy, cause  # old code: NOT_SERVING ("does not carry a valid signature ... planted or changed")
    assert f"the audit checkpoint at row {planted} commits to the erase rows without a valid signature" in caplog.text
    assert AUDIT_CHECKPOINT_PLANTED._value.get() > counted
