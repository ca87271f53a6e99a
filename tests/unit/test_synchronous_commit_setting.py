"""The vault's sessions pin synchronous_commit from a setting, never weaker than `on` (review 16, finding 5).

Pinned to `on` always, the vault lowered a server configured with `remote_apply` (read replicas
that see audit rows at once) to `on` for its own sessions. TOKENVAULT_DB_SYNCHRONOUS_COMMIT takes
`on` (the default) or `remote_apply`; anything weaker stops the start with a message saying why.
The pass-through to the database sessions is tested on real PostgreSQL in
tests/integration/test_synchronous_commit_setting.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.vault_settings import vault_env
from tokenvault_common.env import ConfigError
from vault_service.adapters.postgres.session_settings import PINNED_SETTINGS, session_settings_with
from vault_service.config import VaultServiceConfig

ADDRESS = "https://vault.vault.svc:8200"


def test_the_default_is_on(tmp_path: Path) -> None:
    assert VaultServiceConfig.from_env(vault_env(tmp_path, TOKENVAULT_VAULT_ADDR=ADDRESS)).db_synchronous_commit == "on"
    assert session_settings_with("on") == PINNED_SETTINGS


def test_remote_apply_is_pinned_as_configured(tmp_path: Path) -> None:
    env = vault_env(tmp_path, TOKENVAULT_VAULT_ADDR=ADDRESS, TOKENVAULT_DB_SYNCHRONOUS_COMMIT="remote_apply")
    config = VaultServiceConfig.from_env(env)
    assert config.db_synchronous_commit == "remote_apply"
    assert session_settings_with(config.db_synchronous_commit)["synchronous_commit"] == "remote_apply"


@pytest.mark.parametrize("weaker", ["off", "local", "remote_write", "false", "0"])
def test_a_level_weaker_than_on_stops_the_start_saying_why(tmp_path: Path, weaker: str) -> None:
    env = vault_env(tmp_path, TOKENVAULT_VAULT_ADDR=ADDRESS, TOKENVAULT_DB_SYNCHRONOUS_COMMIT=weaker)
    with pytest.raises(ConfigError, match=r"TOKENVAULT_DB_SYNCHRONOUS_COMMIT must be one of on or remote_apply.*lose"):
        VaultServiceConfig.from_env(env)
    with pytest.raises(ValueError):
        session_settings_with(weaker)
