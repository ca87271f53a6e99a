"""The vault's session settings as libpq startup options, and how role or database defaults are judged."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tokenvault_common.pg_options import startup_options
from vault_service.adapters.postgres.session_settings import (
    PINNED_SETTINGS,
    VAULT_SESSION_OPTIONS,
)


def test_every_pinned_setting_is_one_startup_option_with_its_spaces_escaped() -> None:
    assert startup_options({"default_transaction_isolation": "read committed", "jit": "off"}) == (
        "-c default_transaction_isolation=read\\ committed -c jit=off"
    )
    # One helper for the vault, the watchdog and erase's count (review 37): a backslash escaped too, as libpq reads it.
    escaped = startup_options({"search_path": "pg_catalog, a\\b"})
    assert conninfo_to_dict(make_conninfo("dbname=x", options=escaped))["options"] == escaped
    assert escaped == "-c search_path=pg_catalog,\\ a\\\\b"
    options = conninfo_to_dict(make_conninfo("dbname=x", options=VAULT_SESSION_OPTIONS))["options"]
    assert options == VAULT_SESSION_OPTIONS
    assert VAULT_SESSION_OPTIONS.count("-c ") == len(PINNED_SETTINGS)
    assert PINNED_SETTINGS["synchronous_commit"] == "on"  # insider round 15, finding 3
