"""Every table of schema `vault` the adapters' SQL reads, joins or updates is named `ONLY` (review 40, R40-6).

A table inheriting from a vault table (or a partition of one) feeds its rows to every `FROM vault.t` outside the
parent's constraints (attack 45, A45-3: the ERASED token's pre-erasure row in a child of vault.tokens); e541842 made
the vault's statements say `FROM ONLY` / `UPDATE ONLY`, and Detokenize's `max(id) FROM vault.audit_log` (4e563d5,
landed 36 s before) was missed. This reads the string constants of vault_service/adapters/postgres/*.py (docstrings
and comments left out: they are not sent) so that none is missed again.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import vault_service.adapters.postgres as postgres_adapters

ADAPTERS = Path(postgres_adapters.__file__).parent

VAULT_RELATION = re.compile(r"\b(FROM|JOIN|UPDATE)\s+(?!ONLY\b)(vault\.[A-Za-z_{}][\w{}]*)(\s*\()?", re.IGNORECASE)
"""A vault relation named after FROM, JOIN or UPDATE without ONLY; group 3 set when it is a function call."""

NOT_A_TABLE = {
    # Sequences: nothing inherits from a sequence (CREATE TABLE ... INHERITS and PARTITION OF take tables only),
    # and the catalog check refuses any inheritance link of a vault relation besides.
    "vault.audit_log_id_seq",
}
"""Vault relations read without ONLY on purpose, each for the reason beside it."""


def _sent_strings(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, text) of each string constant or f-string (placeholders as `{}`), docstrings left out."""
    unsent = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant | ast.JoinedStr)
    }  # a bare string statement: a module, class, function or attribute docstring
    unsent |= {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    found = []
    for node in ast.walk(tree):
        if id(node) in unsent:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            text = "".join(str(part.value) if isinstance(part, ast.Constant) else "{}" for part in node.values)
            found.append((node.lineno, text))
    return sorted(found)


def unqualified(source: str) -> list[str]:
    """`line: relation` for each vault table named after FROM/JOIN/UPDATE without ONLY in `source`'s SQL strings."""
    problems = []
    for line, text in _sent_strings(ast.parse(source)):
        for match in VAULT_RELATION.finditer(text):
            relation, call = match.group(2), match.group(3)
            if call is None and relation not in NOT_A_TABLE:  # a set-returning function: ONLY does not apply
                problems.append(f"{line}: {match.group(0).strip()}")
    return problems


def test_the_adapters_name_every_vault_table_they_read_or_update_only() -> None:
    found = {
        path.name: problems
        for path in sorted(ADAPTERS.glob("*.py"))
        if (problems := unqualified(path.read_text(encoding="utf-8")))
    }
    assert found == {}, "say FROM ONLY / JOIN ONLY / UPDATE ONLY (or allow-list a non-table with its reason)"


def test_the_check_sees_what_it_is_for() -> None:
    """The check itself: it finds the forms the adapters write, and leaves docstrings, functions and ONLY alone."""
    source = '''
"""Module docstring: FROM vault.tokens is prose here."""
A = "SELECT t.*, (SELECT max(id) FROM vault.audit_log)"
B = (
    "SELECT 1 FROM ONLY vault.tokens t"
    " JOIN vault.data_keys k ON k.id = t.dek_id"
)
C = f"UPDATE vault.{TABLE} SET x = 1"
D = "SELECT * FROM vault.kept_copies(%s, %s)"
E = "UPDATE ONLY vault.tokens SET x = 1"
F = "SELECT last_value FROM vault.audit_log_id_seq"
'''
    assert unqualified(source) == [
        "3: FROM vault.audit_log",
        "5: JOIN vault.data_keys",
        "8: UPDATE vault.{}",
    ]
