"""The client side of the vault's mTLS: which files identify the caller, and a channel from them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import grpc

MAX_RECEIVE_BYTES = 64 * 1024 * 1024
"""Largest answer accepted (a Detokenize of 10 000 values is far below)."""

MAX_RECONNECT_BACKOFF_MS = 5_000
"""Longest wait between two attempts to reach a vault that is down. gRPC's default grows to 120 s (1.6x a try,
from 1 s): the ETL resumed 46 s after a 2.4-minute outage of the vault (walk 46, W46-10); 5 s keeps a down
vault tried every 5 s per channel, a few connection attempts nobody notices."""

CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
)
"""Every client channel's options (open_channel)."""

# gRPC retries UNAVAILABLE of the vault's calls (used by callers that retry nothing themselves) - but Tokenize's:
# a retried attempt hides whether the one before reached the vault. Measured (grpcio 1.85, walk46 W46-4): with the
# policy, a Tokenize the server saw (its process then killed, or answering UNAVAILABLE) ended, once the port was
# closed, in the very "failed to connect to all addresses" of a call never sent. Without it (the method's entry below
# names no policy, and the most specific entry wins), a Tokenize is sent once; gRPC's transparent retries, made
# whatever the policy, resend only an attempt the server's application never saw (gRPC A6, "Transparent Retries").
# So a Tokenize failing to connect was never sent: it stored nothing (errors.never_sent, VaultClient).
_TRANSPARENT_RETRY = json.dumps(
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
            },
            {"name": [{"service": "tokenvault.v1.TokenVault", "method": "Tokenize"}]},
        ]
    }
)


@dataclass(frozen=True)
class ClientIdentity:
    """The PEM files of an mTLS client: the CA that signed the vault, our certificate and key."""

    ca: Path
    """CA certificate that issued the vault's server certificate."""
    cert: Path
    """Our client certificate; its common name is our identity in the vault's policy."""
    key: Path
    """Private key of `cert`."""
    server_name: str | None = None
    """Name to verify the server certificate against, when the address is not that name (e.g. localhost)."""
    ca_pem: bytes | None = field(default=None, repr=False)
    """The CA certificate's contents, when already read (the `tokenvault` command reads each file once, from the
    file it checked); None: read from `ca`."""
    cert_pem: bytes | None = field(default=None, repr=False)
    """The certificate's contents, when already read; None: read from `cert`."""
    key_pem: bytes | None = field(default=None, repr=False)
    """The key's contents, when already read; None: read from `key`."""

    def describe(self) -> str:
        """Which certificate is presented, for error messages."""
        return f"client certificate {self.cert}"

    def credentials(self) -> grpc.ChannelCredentials:
        """TLS credentials from the files; OSError names a missing or unreadable file."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem if self.ca_pem is not None else _read(self.ca, "CA certificate"),
            private_key=self.key_pem if self.key_pem is not None else _read(self.key, "client key"),
            certificate_chain=self.cert_pem if self.cert_pem is not None else _read(self.cert, "client certificate"),
        )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise OSError(f"cannot read the {what} {path}: {error.strerror or error}") from None


def open_channel(address: str, identity: ClientIdentity, transparent_retry: bool = False) -> grpc.Channel:
    """A channel to `address` that verifies the server and presents `identity`."""
    options: list[tuple[str, str | int]] = list(CHANNEL_OPTIONS)
    if transparent_retry:
        options.append(("grpc.service_config", _TRANSPARENT_RETRY))
    if identity.server_name:
        options.append(("grpc.ssl_target_name_override", identity.server_name))
    return grpc.secure_channel(address, identity.credentials(), options=options)


def secure_channel(address: str, ca: Path, cert: Path, key: Path, server_name: str | None = None) -> grpc.Channel:
    """A channel verifying the server against `ca`, presenting `cert`/`key` (gRPC retries UNAVAILABLE but Tokenize)."""
    return open_channel(address, ClientIdentity(ca, cert, key, server_name), transparent_retry=True)
