"""Migrations 0033 and 0034 name exactly the types the vault makes, and their prefixes (0034; review 28, F7)."""

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


def test_the_prefix_of_each_type_in_the_database_is_the_domains() -> None:
    """0034's CHECK and vault.erase_tokens' prefixes and type list are TokenType's (review 28, F7)."""
    (migration,) = MIGRATIONS_DIR.glob("0034_*.sql")
    text = migration.read_text()
    expected = sorted((member.type_name, member.prefix) for member in TokenType)
    pairs = re.findall(r"token_type = '([^']*)' AND starts_with\(token, '([^']*)_'\)", text)
    assert pairs and sorted(set(pairs)) == expected
    likes = re.findall(r"token LIKE '([^']*)\\_%' AND '([^']*)' = ANY \(named_types\)", text)
    assert sorted((name, prefix) for prefix, name in likes) == expected
    (listed,) = re.findall(r"named_types <@ ARRAY\[([^]]*)\]", text)
    assert sorted(re.findall(r"'([^']*)'", listed)) == sorted(member.type_name for member in TokenType)
