"""What binds a row of user_logins to the tokens it holds: the ETL's signature over its batch's row digests.

The database owner can rewrite any row of `public.user_logins` (attack 41, A41-1: two people's tokens swapped,
and the privacy officer's erasure of one destroyed the other's values). So the ETL, per load batch, hashes each
row's (event id, user id, masked ip, masked device id, create date) - `row_digest` - and has OpenBao Transit
sign the batch's list once with an ed25519 key of its own (LOGIN_ROWS_KEY, not exportable; the ETL may only
`sign` with it). The list and its signature go to `public.user_login_manifests`, each row naming its list
(`row_manifest`), in the rows' transaction (migration 0068). Whoever reads the rows later - the officer's
`tokenvault erase` - checks them offline with the key's public keys (`PublicKeys`): no OpenBao identity needed,
and no one without the key can make a list that verifies.

Shared by the ETL (etl_service) and the command (tokenvault_cli): both must compute the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

LOGIN_ROWS_KEY = "tokenvault-login-rows"
"""The ETL's Transit key (ed25519, exportable=false) that signs the digests of the rows it loads."""
ROW_TAG = "tv-login-row-v1"
MANIFEST_TAG = b"tv-login-rows-v1\0"
DIGEST_BYTES = 32
MAX_ROWS_PER_LIST = 1000
"""The most rows one signed list lists: the ETL's largest batch (ETL_BATCH_SIZE's upper bound), one row a message."""
MAX_LIST_BYTES_EACH = MAX_ROWS_PER_LIST * DIGEST_BYTES
"""The largest list the ETL signs (32,000 bytes): migration 0071's CHECK on user_login_manifests, and the most of one
list `erase` reads - a larger one is unverifiable, never read (attack 48, A48-2: one planted 64 MiB list blocked
every erasure of a person)."""
_SIGNATURE = re.compile(r"vault:v([1-9][0-9]{0,8}):([A-Za-z0-9+/]+={0,2})")
_CANONICAL = json.JSONEncoder(separators=(",", ":"))
"""One encoder for every row: `json.dumps` with these separators builds a new one per call (1 µs of 3.7 a row)."""


def row_digest(
    event_id: str | None, user_id: str | None, masked_ip: str | None, masked_device_id: str | None, created: date | None
) -> bytes:
    """SHA-256 of the row's fields that say whose tokens these are, as canonical JSON."""
    fields = [ROW_TAG, event_id, user_id, masked_ip, masked_device_id, created.isoformat() if created else None]
    return hashlib.sha256(_CANONICAL.encode(fields).encode()).digest()


def signed_input(manifest_id: uuid.UUID, digests: bytes) -> bytes:
    """What Transit signs for a list: its tag, its id, and the SHA-256 of its digests (32 bytes each, in order)."""
    return MANIFEST_TAG + manifest_id.bytes + hashlib.sha256(digests).digest()


class PublicKeysError(Exception):
    """The public keys file cannot be read as Transit's answer for the key."""


@dataclass(frozen=True)
class PublicKeys:
    """The ed25519 public keys of LOGIN_ROWS_KEY, by version (Transit's `vault:vN:` prefix picks one)."""

    by_version: Mapping[int, Ed25519PublicKey]
    read_at: datetime | None = None
    """When the file was read from OpenBao: its `read_at` (`login-row-keys refresh`, the embedded stack); None: it does
    not say (`bao read ... > FILE`; never its mtime - a copy's is its own, review 49, R49-5). A version it lacks can be
    newer than the file only on a list signed after that (attack 49, A49-3)."""

    @classmethod
    def parse(cls, text: str | bytes) -> PublicKeys:
        """Transit's read of `transit/keys/tokenvault-login-rows` (the whole answer, its `data`, or `keys`).

        `bao read -format=json transit/keys/tokenvault-login-rows` prints it; the read shows public keys
        only (the key is not exportable). PublicKeysError when it holds no ed25519 public key.
        """
        try:
            document = json.loads(text)
        except (ValueError, UnicodeDecodeError) as error:
            raise PublicKeysError(f"not JSON ({type(error).__name__})") from None
        read_at = _read_at(document.get("read_at") if isinstance(document, dict) else None)
        for step in ("data", "keys"):
            if isinstance(document, dict) and isinstance(document.get(step), dict):
                document = document[step]
        if not isinstance(document, dict) or not document:
            raise PublicKeysError("no keys in it (expected Transit's read of transit/keys/" + LOGIN_ROWS_KEY + ")")
        keys: dict[int, Ed25519PublicKey] = {}
        for version, entry in document.items():
            public = entry.get("public_key") if isinstance(entry, dict) else None
            if not str(version).isdigit() or not isinstance(public, str):
                raise PublicKeysError(f"key version {str(version)[:12]!r} has no public_key")
            try:
                keys[int(version)] = Ed25519PublicKey.from_public_bytes(base64.b64decode(public, validate=True))
            except (binascii.Error, ValueError):
                raise PublicKeysError(f"key version {version}'s public_key is not an ed25519 public key") from None
        return cls(keys, read_at)

    def lacks_version_of(self, signature: str) -> int | None:
        """The key version a well-formed `signature` names when these keys do not hold it (a rotation since); else None.

        A signature by a version the file lacks cannot be checked: not evidence of tampering, but of a stale file
        (walk46, W46-2: after a routine rotation every newly loaded row was reported as tampered with).
        """
        match = _SIGNATURE.fullmatch(signature or "")
        if not match or int(match.group(1)) in self.by_version:
            return None
        return int(match.group(1))

    def may_come_with_a_refresh(self, version: int, signed_at: datetime | None, now: datetime) -> bool:
        """Whether refreshing the file could bring `version`, which it lacks, for a list signed at `signed_at`.

        Attack 49, A49-3: the ETL's database role planted a list `vault:v99:` and a row holding a person's token
        naming it; refused as "the keys file is stale", every erasure of the person was blocked, and a refresh did
        not help (v99 never was). Transit's versions only grow and its read holds every version up to the latest:
        a version the file lacks is a rotation since only if it is newer than every version the file holds and the
        list was signed after the file was read from OpenBao (and not after `now`: a signed_at set in the future
        would stay "newer than the file" after every refresh). Otherwise no refresh brings it: the list does not
        verify. `now`: the database's clock, read after the list was (attack 50, A50-2: the reader's clock with 5
        minutes' skew let a list the ETL's role dated 4 minutes ahead pass as a rotation right after a refresh) -
        a list read was committed before, so its signed_at (the database's now() when inserted) is not later. A file
        that does not say when it was read (`vault read > file`, compose's vault-init) may be stale for any list
        (review 49, R49-5: its modification time, taken instead, made a copy handed out after a rotation call the
        new version's genuine rows unverifiable, "no refresh brings it").
        """
        if version <= max(self.by_version, default=0):
            return False
        if signed_at is None or signed_at > now:
            return False
        return self.read_at is None or self.read_at < signed_at

    def verify(self, signature: str, message: bytes) -> bool:
        """Whether `signature` (Transit's `vault:vN:<base64>`) is key version N's signature of `message`."""
        match = _SIGNATURE.fullmatch(signature or "")
        if not match:
            return False
        key = self.by_version.get(int(match.group(1)))
        if key is None:
            return False
        try:
            key.verify(base64.b64decode(match.group(2), validate=True), message)
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


def _read_at(text: object) -> datetime | None:
    """The file's `read_at` (ISO 8601 with its zone: `login-row-keys refresh` writes it); None: absent or not one."""
    try:
        when = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return when if when is not None and when.tzinfo is not None else None


def digests_of(listing: bytes) -> frozenset[bytes]:
    """The digests a manifest lists (DIGEST_BYTES each)."""
    return frozenset(listing[i : i + DIGEST_BYTES] for i in range(0, len(listing) - DIGEST_BYTES + 1, DIGEST_BYTES))
