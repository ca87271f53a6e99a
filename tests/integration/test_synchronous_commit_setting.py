"""A vault configured with `remote_apply` runs its sessions, and its audit commits, with it (review 16, finding 5).

Before, the startup options pinned `synchronous_commit = on` whatever the server ran with, so a
server set to `remote_apply` had the vault's sessions lowered to `on`. Real PostgreSQL and OpenBao.
"""

from __future__ import annotations

import psycopg

from tests.conftest import running_vault

_APPEND_SETTING = (
    "INSERT INTO vault.audit_log (client, client_serial, client_cert_sha256, action, purpose, token_types,"
    " item_count, outcome) VALUES ('analyst', '1', 'ab', 'detokenize', 'INC-4821', 'ip', 1,"
    " 'ok: 1 revealed, 0 refused') RETURNING pg_catalog.current_setting('synchronous_commit')"
)
"""An audit append in a vault session, returning synchronous_commit as its commit will use it (the
chain trigger of migration 0025 has run by RETURNING)."""


def test_remote_apply_configured_reaches_every_session_and_the_audit_commit(stack_env: dict[str, str]) -> None:
    with (
        running_vault(stack_env, TOKENVAULT_DB_SYNCHRONOUS_COMMIT="remote_apply") as vault,
        vault.wired.pool.connection() as conn,
    ):
        (session,) = conn.execute("SELECT pg_catalog.current_setting('synchronous_commit')").fetchone() or ("",)
        with conn.transaction():
            (append,) = conn.execute(_APPEND_SETTING).fetchone() or ("",)
            raise psycopg.Rollback()  # the row is not kept: only its commit setting is read
    assert (session, append) == ("remote_apply", "remote_apply")


def test_the_default_stays_on(stack_env: dict[str, str]) -> None:
    with running_vault(stack_env) as vault, vault.wired.pool.connection() as conn:
        (session,) = conn.execute("SELECT pg_catalog.current_setting('synchronous_commit')").fetchone() or ("",)
    assert session == "on"
