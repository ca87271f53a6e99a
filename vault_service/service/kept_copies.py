"""The kept copies of re-sealed values, checked before the data key under them goes (review 25, R25-1).

A re-seal keeps the value it replaces in vault.resealed_values, under its old data key
(migration 0020): garbage the serving role re-seals during a rotation - the database cannot tell
it from the re-encryption job's work - can be put back by the owner from there. That copy lives
only as long as its key: once `reencrypt` retires the key and `retire-kek-versions` retires the
KEK version wrapping it, the garbage is all that is left. So before either, the key jobs - which
hold both keys - open each kept copy under the key and the value its token holds now, and
refuse when one differs (a token's value never changes; an erasure deletes its kept copies).
Only a kept copy that opens counts: one that does not held nothing to lose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from vault_service.domain.crypto import DataKey, SealBroken, open_sealed
from vault_service.domain.errors import InvalidValue, KeysUnavailable
from vault_service.domain.keys import KeyPurpose, KeyState
from vault_service.domain.token_types import TokenType
from vault_service.service.keyring import KeyManager
from vault_service.service.ports import KeptCopy, KeyStore, TokenStore

BATCH = 1000
"""Kept copies read at a time by the checks, whatever batch size the job was given (review 26, R26-2)."""

RESTORE_STEP = (
    "docs/key-rotation.md, 'A re-sealed value differs from its kept copy': the database owner puts the kept"
    " copies back (and the key back to decrypt_only if it is retired), then runs reencrypt again"
)
"""Where the owner's restore is written down, named in every refusal."""


def _opened(key: DataKey | None, copy: KeptCopy, sealed: bytes) -> str | None:
    """The value `sealed` holds under `key`, or None when it does not open (a row of no known type: never)."""
    if key is None:
        return None
    try:
        return open_sealed(key, TokenType.from_name(copy.token_type), copy.token, sealed)
    except (SealBroken, InvalidValue):  # InvalidValue: a token type the vault never made (review 26, R26-3)
        return None


def differing_kept_copies(
    tokens: TokenStore,
    key: DataKey,
    keys: Mapping[int, DataKey],
    progress: Callable[[int], None] = lambda done: None,
) -> int:
    """How many kept copies under `key` hold a value their token's present value (under `keys`) does not.

    Read `BATCH` at a time (vault.kept_copies, migration 0032); `progress` gets each batch's size.
    A present value that does not open, or is under a key not in `keys`, differs; a kept copy that does
    not open (a row of a type the vault never makes included) held nothing to lose and is not counted.
    """
    after_id, differing = 0, 0
    while True:
        after_id, copies = tokens.kept_copies_batch(key.key_id, after_id, BATCH)
        if not copies:
            return differing
        for copy in copies:
            kept = _opened(key, copy, copy.kept)
            if kept is not None and _opened(keys.get(copy.dek_id), copy, copy.sealed) != kept:
                differing += 1
        progress(len(copies))


def not_retired_message(differing: Mapping[int, int]) -> str:
    """Why `reencrypt` retires no key: `differing` counts the values per data key (never a value or token)."""
    counts = ", ".join(f"{count} under data key {key_id}" for key_id, count in sorted(differing.items()))
    return (
        f"{sum(differing.values())} re-sealed value(s) no longer hold the value kept from before their re-seal"
        f" ({counts}): tampering suspected (a re-seal the re-encryption job did not write; see the audit log's"
        f" reseal rows). No data key was retired: the kept copies still open. Remedy: {RESTORE_STEP}"
    )


def kek_version_refusal(key_id: int, kek_version: int, differing: int) -> str:
    """Why the KEK version wrapping retired data key `key_id` may not go: `differing` values only it still holds."""
    return (
        f"{differing} re-sealed value(s) no longer hold the value kept under retired data key {key_id}"
        f" (wrapped by v{kek_version}): tampering suspected, and those kept copies are their only good copies,"
        f" which would no longer open. Remedy: {RESTORE_STEP}; then run this command again"
    )


def unchecked_refusal(key_id: int, kek_version: int, error: Exception) -> str:
    """Why the KEK version wrapping retired data key `key_id` may not go: its kept copies could not be checked."""
    return (
        f"the kept copies under retired data key {key_id} (wrapped by v{kek_version}) could not be checked ({error}):"
        " a re-sealed value they alone still hold would no longer open"
    )


def unused_keys_checked(
    key_store: KeyStore, keys: KeyManager, tokens: TokenStore, progress: Callable[[int], None]
) -> tuple[list[int], dict[int, int]]:
    """The decrypt_only data keys checked before `reencrypt` retires them; per key, the kept copies that differ."""
    ring = keys.refresh()
    checked = [
        k.key_id
        for k in key_store.load_keys()
        if k.purpose == KeyPurpose.ENCRYPTION and k.state == KeyState.DECRYPT_ONLY
    ]
    differing = {key_id: differing_kept_copies(tokens, ring.key(key_id), ring.keys, progress) for key_id in checked}
    return checked, {key_id: count for key_id, count in differing.items() if count}


def retired_keys_refusal(
    below: int, min_decryption: int, key_store: KeyStore, keys: KeyManager, tokens: TokenStore
) -> str | None:
    """Why the KEK versions below `below` may not go: a retired data key they wrap holds values only it still has.

    Each retired encryption key wrapped by a version from `min_decryption` up to `below` (the ones
    this retirement makes unreadable) with kept copies is unwrapped and its kept copies checked, as
    `reencrypt` does before it retires a key: the serving role may also retire a key itself.
    A key Vault will not unwrap, or not the key made under its id, is a refusal too.
    """
    ring = keys.ring
    for row in key_store.load_keys():
        if row.purpose != KeyPurpose.ENCRYPTION or row.state != KeyState.RETIRED:
            continue
        if not min_decryption <= row.kek_version < below or not tokens.kept_copies_batch(row.key_id, 0, 1)[1]:
            continue
        try:
            differing = differing_kept_copies(tokens, keys.retired_key(row.key_id), ring.keys)
        except KeysUnavailable as error:  # Vault refused it, or it is not the key made under that id
            return unchecked_refusal(row.key_id, row.kek_version, error)
        if differing:
            return kek_version_refusal(row.key_id, row.kek_version, differing)
    return None
