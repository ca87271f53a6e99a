"""The key lifecycle: what a data key is for and where it stands. SQL stores these; it does not decide them.

encryption key:  active -> decrypt_only (a newer DEK is active) -> retired (no value uses it)
fingerprint key: pending (re-index under way) -> active -> retired (after the re-index)
audit key:       active (for ever: the audit log's token hashes are computed under it)
"""

from __future__ import annotations

import enum


class KeyPurpose(enum.StrEnum):
    """What a data key does."""

    ENCRYPTION = "encryption"
    FINGERPRINT = "fingerprint"
    AUDIT = "audit"
    """Keys the hashes of revealed tokens in the audit log (who saw what); kept for ever."""


class KeyState(enum.StrEnum):
    """Where a data key stands in its lifecycle."""

    PENDING = "pending"
    ACTIVE = "active"
    DECRYPT_ONLY = "decrypt_only"
    RETIRED = "retired"


def state_of_new_key(purpose: KeyPurpose) -> KeyState:
    """The state a new key of `purpose` starts in.

    A new DEK is active at once (the old one becomes decrypt_only); a new fingerprint key is
    pending until every value is re-indexed under it.
    """
    return KeyState.ACTIVE if purpose is KeyPurpose.ENCRYPTION else KeyState.PENDING


def may_decrypt(state: KeyState) -> bool:
    """Whether values sealed under a key in `state` can still be opened."""
    return state is not KeyState.RETIRED
