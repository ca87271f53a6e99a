"""The embedded stack's `KEY=value` file (stack.env), shell-quoted: read by the dev stack, the CLI and the ETL.

devstack/envfile.py writes it; `tokenvault --stack` and the ETL's `dead-letters erase` (the officer's line in
the stack it runs in) read it. One reader, so the three read it alike.
"""

from __future__ import annotations

import shlex
from pathlib import Path


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a file devstack.envfile.write_env_file wrote."""
    return parse_env(path.read_text())


def parse_env(text: str) -> dict[str, str]:
    """Parse the text of such a file: `KEY=value` lines, `#` comments (ValueError for a value shlex cannot split)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, raw = line.split("=", 1)
            parts = shlex.split(raw)
            values[key] = parts[0] if parts else ""
    return values
