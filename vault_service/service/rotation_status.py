"""Where key rotation stands, and which old KEK versions may be retired without losing a data key.

A data key counts while it may still be loaded: any key not retired, and the audit keys (never
retired: they key the hashes `who-saw` looks for). A retired key's row is never rewrapped
(migration 0030): retiring the KEK version under it is what makes it unreadable, on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vault_service.domain.keys import KeyPurpose, KeyState
from vault_service.service.ports import InterruptedJob, KekVersions, UnpairedOutcome

REWRAP_FIRST = "run `tokenvault rewrap --reason <ticket>` first (it rewraps them under the latest version)"
"""What moves every counted data key onto the KEK's latest version."""


@dataclass(frozen=True)
class KeyStatus:
    """One data key as the runbook shows it."""

    key_id: int
    purpose: str
    state: str
    kek_version: int

    @property
    def counts(self) -> bool:
        """Whether the service may still load this key, so the KEK version wrapping it must stay."""
        return self.state != KeyState.RETIRED or self.purpose == KeyPurpose.AUDIT

    def unwraps_under(self, min_decryption_version: int) -> bool:
        """Whether Transit still decrypts the KEK version wrapping this key."""
        return self.kek_version >= min_decryption_version

    def describe(self) -> str:
        """`key 7 (encryption, active, v1)`."""
        return f"key {self.key_id} ({self.purpose}, {self.state}, v{self.kek_version})"


@dataclass(frozen=True)
class RotationStatus:
    """Where rotation stands, and which `min_decryption_version` is safe to set on the KEK."""

    kek_latest_version: int
    keys: list[KeyStatus]
    rows_to_reencrypt: int
    rows_to_reindex: int
    """While a fingerprint key is pending: live rows without a next fingerprint under it (the re-index's work)."""
    kek_min_decryption_version: int = 0
    """The KEK's present min_decryption_version in Transit: what `retire-kek-versions` last raised it to."""
    kek_min_encryption_version: int = 0
    """The KEK's present min_encryption_version (0 while never set)."""
    interrupted: tuple[InterruptedJob, ...] = ()
    """Key operations whose process ended between their intent row and their outcome (attack 26, F5): the
    next key operation, or the vault's upkeep, appends their `failed: interrupted` outcome row."""
    unpaired_outcomes: tuple[UnpairedOutcome, ...] = ()
    """Outcome rows of key operations naming an intent row they cannot pair with (review 33, R33-5): the vault
    writes one per intent row, so each is forged or a duplicate (up to UNPAIRED_LISTED, oldest first)."""
    rows_to_compact: int = 0
    """Fingerprints not under the newest fingerprint key yet (what the re-index's compaction moves); while a key is
    pending, `rows_to_reindex` counts those of them still without a next fingerprint under it (chaos 50, V50-5)."""

    @property
    def safe_min_decryption_version(self) -> int:
        """The oldest KEK version a loaded data key (live, or an audit key) is still wrapped with."""
        return min((k.kek_version for k in self.keys if k.counts), default=self.kek_latest_version)


def why_not_retire(below: int, keys: Sequence[KeyStatus], kek: KekVersions, kek_name: str) -> str | None:
    """Why the KEK versions below `below` may not be retired now (a message naming the remedy), or None.

    `keys`: every data key as stored; those that count must all be wrapped by version `below` or later.
    """
    if below > kek.latest:
        return (
            f"KEK {kek_name} has no version {below}: its latest is v{kek.latest} (to retire v{kek.latest} too, rotate"
            f" the KEK first: bao write -f transit/keys/{kek_name}/rotate, then rewrap)"
        )
    if below < kek.min_decryption:
        return (
            f"KEK {kek_name}'s min_decryption_version is already {kek.min_decryption}: setting {below} would bring"
            " retired versions back (this command only raises it; lowering is the raw"
            f" `bao write transit/keys/{kek_name}/config min_decryption_version=...`)"
        )
    old = [k for k in keys if k.counts and k.kek_version < below]
    if old:
        named = ", ".join(k.describe() for k in old)
        return (
            f"{len(old)} data key(s) still wrapped under KEK versions below v{below}, which would no longer"
            f" unwrap: {named}; {REWRAP_FIRST}, then run this command again"
        )
    return None
