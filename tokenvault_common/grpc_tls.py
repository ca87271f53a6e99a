"""Client side of the vault's mTLS; kept for existing imports, the code lives in `tokenvault_client.channel`."""

from __future__ import annotations

from tokenvault_client.channel import secure_channel

__all__ = ["secure_channel"]
