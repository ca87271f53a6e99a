"""The smallest environment the vault service's configuration accepts, for tests of its settings."""

from __future__ import annotations

from pathlib import Path


def vault_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """Every required TOKENVAULT_* setting, files pointing at one placeholder in `tmp_path`; `settings` on top."""
    placeholder = tmp_path / "file.pem"
    placeholder.write_text("x")
    files = ("TOKENVAULT_TLS_CERT", "TOKENVAULT_TLS_KEY", "TOKENVAULT_TLS_CLIENT_CA", "TOKENVAULT_POLICY_FILE")
    return {
        **dict.fromkeys(files, str(placeholder)),
        "TOKENVAULT_DATABASE_DSN": "postgresql://vault@localhost/tokenvault?require_auth=scram-sha-256",
        "TOKENVAULT_VAULT_ADDR": "http://127.0.0.1:8200",
        "TOKENVAULT_VAULT_TOKEN": "dev-only",
        **settings,
    }
