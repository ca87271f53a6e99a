"""OpenBao clients with the stack's tokens, for what a test does as a team outside the services."""

from __future__ import annotations

from pathlib import Path

import hvac


def security_client(env: dict[str, str]) -> hvac.Client:
    """The security team's OpenBao client (it rotates the KEK), with the token the stack wrote for it."""
    return hvac.Client(url=env["VAULT_ADDR"], token=Path(env["VAULT_SECURITY_TOKEN_FILE"]).read_text())
