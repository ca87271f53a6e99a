"""The stack's `KEY=value` file: where everything listens, sourceable by a shell."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

from devstack.private_files import write_private
from tokenvault_common.env_file import parse_env, read_env_file

__all__ = ["HEADER", "parse_env", "read_env_file", "write_env_file"]

HEADER = """\
# tokenvault embedded stack: where everything listens.
# THROWAWAY DEV CREDENTIALS, generated at run time by `make up`; never use them elsewhere.
# Use:  set -a; . {path}; set +a
"""


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Write `values` as shell-quoted KEY=value lines, readable by the owner only."""
    body = "".join(f"{key}={shlex.quote(str(value))}\n" for key, value in values.items())
    write_private(path, (HEADER.format(path=path) + body).encode())
