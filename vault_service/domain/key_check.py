"""The check value of a data key: which key an id is, without revealing the key.

BLAKE2b keyed with the key (its MAC mode), over a fixed message: 16 bytes that change with the
key and stay with it through a KEK rewrap (the plaintext is the same). Recorded in
`vault.data_keys.check_value` when the key is made, and with it in the key's hash-chained
`data-key-insert` row; the service refuses to load a key whose check value differs from its
row's, and `audit verify`/`who-saw` refuse when a loaded audit key is not the one the chain
recorded (its wrapped key was replaced: ninth insider round, Break 1).
"""

from __future__ import annotations

import hashlib

CHECK_VALUE_BYTES = 16


def check_value(material: bytes) -> bytes:
    """The check value of the data key `material`."""
    keyed = hashlib.blake2b(key=material[:64], digest_size=CHECK_VALUE_BYTES, person=b"tv-key-check")
    keyed.update(b"tokenvault data key check")
    return keyed.digest()
