"""A WARNING raised while migrating reaches the migrator's log (review 31, R31-4).

On a managed PostgreSQL the migrator is a non-superuser owner: 0037's (and 0007's) REVOKE of the
advisory-lock functions from PUBLIC then does nothing, and PostgreSQL says so with a WARNING per
function, as 0037's own `RAISE WARNING` does. psycopg drops notices unless a handler takes them, so
the migrator printed "applied N migration(s)" and nothing else: the operator was never told that an
insider guarantee is missing. Here one migration of a directory of its own, in a database of its own,
raises a WARNING and a NOTICE: the WARNING is logged with the migration's version, the NOTICE is not.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.integration.own_database import database_of_its_own
from tokenvault_common.migrations import migrate


def test_a_migration_s_warning_is_logged_with_its_version(
    stack_env: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "0001_warns.sql").write_text(
        "DO $$ BEGIN RAISE NOTICE 'just so'; RAISE WARNING 'no privileges could be revoked for x'; END $$;"
    )
    with (
        database_of_its_own(stack_env, "migration_warnings", dsns=("PG_ADMIN_DSN",)) as env,
        caplog.at_level(logging.INFO, logger="tokenvault_common.migrations"),
    ):
        assert migrate(env["PG_ADMIN_DSN"], tmp_path) == ["0001_warns"]
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said == ["migration 0001_warns: no privileges could be revoked for x"]
    assert not [r for r in caplog.records if "just so" in r.getMessage()]
