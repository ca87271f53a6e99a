"""Client policies for the vault's unit tests, parsed as config/vault-policy.toml is."""

from __future__ import annotations

from vault_service.domain.policy import parse_policy

POLICY = parse_policy(
    {
        "clients": {
            "etl": {"tokenize": ["ip", "device_id"]},
            "analyst": {"detokenize": {"ip": "plain", "device_id": "masked"}},
            "ip-only": {"tokenize": ["ip"]},
        }
    }
)
"""`etl` tokenizes both types, `analyst` sees ips in plain and device ids masked, `ip-only` tokenizes ips."""
