"""The signed list of a load batch's row digests (attack 41, A41-1; tokenvault_common/login_row_signatures.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from etl_service.domain.messages import UserLoginRow
from tokenvault_common.login_row_signatures import row_digest, signed_input


@dataclass(frozen=True)
class RowManifest:
    """What public.user_login_manifests holds for one batch; each of its rows names `manifest_id`."""

    manifest_id: uuid.UUID
    digests: bytes
    """The rows' SHA-256 digests (row_digest), 32 bytes each, in the rows' order."""
    signature: str
    """Transit's `vault:vN:<base64>` ed25519 signature of signed_input(manifest_id, digests)."""


def unsigned_manifest(rows: Sequence[UserLoginRow]) -> tuple[uuid.UUID, bytes, bytes]:
    """A new list's id, the rows' digests, and the bytes to have signed."""
    manifest_id = uuid.uuid4()
    digests = b"".join(row_digest(r.event_id, r.user_id, r.masked_ip, r.masked_device_id, r.create_date) for r in rows)
    return manifest_id, digests, signed_input(manifest_id, digests)
