"""One spelling of compose's refresh of the officers' public keys file (walk49, W49-6).

`audit login-rows`' hint said `docker compose up -d vault-init`, docs/key-rotation.md step 8 `docker compose up
--no-deps vault-init`. The right one leaves `vault` alone (vault-init depends on it: `up` without --no-deps would
recreate a Vault whose compose definition changed, and it comes back sealed) and shows vault-init's output.
"""

from __future__ import annotations

import re
from pathlib import Path

from tokenvault_cli.login_row_keys_commands import refresh_command
from tokenvault_cli.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_REFRESH = "docker compose up --no-deps vault-init"
WHERE_USERS_READ_IT = ("README.md", "docs", "deploy", "tokenvault_cli")
UP_VAULT_INIT = re.compile(r"docker compose up[^`\n#]*?vault-init")


def _spellings() -> dict[str, set[str]]:
    """Every `docker compose up ... vault-init` written where users read it: spelling -> files."""
    found: dict[str, set[str]] = {}
    for place in WHERE_USERS_READ_IT:
        root = REPO / place
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.suffix in {".md", ".py", ".sh"}]
        for path in files:
            for spelling in UP_VAULT_INIT.findall(path.read_text()):
                found.setdefault(" ".join(spelling.split()), set()).add(str(path.relative_to(REPO)))
    return found


def test_the_cli_hint_names_the_refresh_that_leaves_vault_as_it_runs() -> None:
    hint = refresh_command(Settings(login_row_keys=Path("/login-row-keys/login-row-keys.json")))
    assert f"compose: `{COMPOSE_REFRESH}`" in hint


def test_docs_deploy_and_cli_spell_the_refresh_one_way() -> None:
    spellings = _spellings()
    assert set(spellings) == {COMPOSE_REFRESH}, spellings
    assert "docs/key-rotation.md" in spellings[COMPOSE_REFRESH]
