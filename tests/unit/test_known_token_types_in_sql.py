"""Migration 0033's CHECK on vault.tokens.token_type names exactly the types the vault makes."""

from __future__ import annotations

import re

from tokenvault_common.migrations import MIGRATIONS_DIR
from vault_service.domain.token_types import TokenType


def test_the_database_knows_the_token_types_the_domain_knows() -> None:
    (migration,) = MIGRATIONS_DIR.glob("0033_*.sql")
    checks = re.findall(r"CHECK \(token_type IN \(([^)]*)\)\)", migration.read_text())
    assert checks, "no CHECK on token_type in migration 0033"
    for listed in checks:
        assert sorted(re.findall(r"'([^']*)'", listed)) == sorted(member.type_name for member in TokenType)
