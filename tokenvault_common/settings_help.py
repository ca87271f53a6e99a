"""`--help` text of a service's settings, from the field docstrings of its config dataclass.

One source for the code and the help: each field's docstring names its environment variable.
"""

from __future__ import annotations

import ast
import itertools
import textwrap
from pathlib import Path


def settings_help(config_module: Path, class_name: str) -> str:
    """Every field docstring of `class_name` in `config_module`, one wrapped paragraph each."""
    tree = ast.parse(config_module.read_text())
    (config_class,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    lines = []
    for field, doc in itertools.pairwise(config_class.body):
        if isinstance(field, ast.AnnAssign) and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant):
            text = " ".join(str(doc.value.value).split())
            lines.append(textwrap.fill(text, 100, initial_indent="  ", subsequent_indent="      "))
    return "settings (environment variables):\n" + "\n".join(lines)
