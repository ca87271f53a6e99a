"""Client side of the vault's mTLS: a secure channel from PEM files."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

# Transparent retries of calls that never reached the server or hit a brief outage.
_RETRY_POLICY = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "tokenvault.v1.TokenVault"}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def secure_channel(address: str, ca: Path, cert: Path, key: Path, server_name: str | None = None) -> grpc.Channel:
    """A channel that verifies the server against `ca` and presents `cert`/`key`."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(), private_key=key.read_bytes(), certificate_chain=cert.read_bytes()
    )
    options: list[tuple[str, str | int]] = [
        ("grpc.service_config", _RETRY_POLICY),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(address, credentials, options=options)
