"""The stack's `KEY=value` file: where everything listens, sourceable by a shell."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

HEADER = """\
# tokenvault embedded stack: where everything listens.
# THROWAWAY DEV CREDENTIALS, generated at run time by `make up`; never use them elsewhere.
# Use:  set -a; . {path}; set +a
"""


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Write `values` as shell-quoted KEY=value lines, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    body = "".join(f"{key}={shlex.quote(str(value))}\n" for key, value in values.items())
    path.write_text(HEADER.format(path=path) + body)


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a file written by write_env_file."""
    return parse_env(path.read_text())


def parse_env(text: str) -> dict[str, str]:
    """Parse the text of a file written by write_env_file (ValueError for a value shlex cannot split)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, raw = line.split("=", 1)
            parts = shlex.split(raw)
            values[key] = parts[0] if parts else ""
    return values
