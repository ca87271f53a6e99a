"""Each module-level docstring of a constant sits under that constant: never two string statements in a row.

A constant inserted between another and its docstring leaves the first undocumented and the second
with two texts, one of them wrong (attack 26, F6: `KEY_JOB_STOP_SECONDS` in vault_service/__main__.py).
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("vault_service", "etl_service", "tokenvault_cli", "tokenvault_client", "tokenvault_common", "devstack")


def _strings_in_a_row(path: Path) -> list[int]:
    """Lines of module-level string statements that follow another string statement."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return [
        second.lineno
        for first, second in itertools.pairwise(body)
        if all(
            isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str)
            for s in (first, second)
        )
    ]


def test_no_module_has_two_docstrings_in_a_row() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in _strings_in_a_row(path)
    ]
    assert found == [], "a string statement follows another (a constant inserted above its neighbour's docstring?)"
