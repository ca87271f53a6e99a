"""`status` for KeyJobs: where key rotation stands, read on the serving wiring without a key job's session.

`status` used to open a whole key-job session (attack 28, F7): a pool of its own (two new database
connections), a key ring of its own (a Transit decrypt of every live data key), the policy file read
again, for a read. It is read here from the service's own stores: the data-key rows and the work left
(the serving pool), the KEK's versions (one Transit read), and the interrupted key operations (one
short connection, as the key jobs' liveness asks them: adapters/postgres/key_job_liveness.py).

What the session's key ring gave `status` is kept: it never shows a key as fine that would not load.
Every key the service loads (live, or an audit key) is unwrapped and matched with its check value
the first time this process sees its wrapped key, again whenever that wrapped key changes (a rewrap;
or a wrapped key replaced in the table: attack 28 saw `status` refuse a faked rewrap), and again
while it is under a KEK version below the KEK's min_decryption_version (Transit then refuses it, and
`status` says so, as before). Only (wrapped key, check value) is kept between calls, never a key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from vault_service.domain.errors import KeysUnavailable
from vault_service.domain.key_check import check_value
from vault_service.service.keyring import KeyManager, generation_of, loaded, one_key_under_two_ids
from vault_service.service.ports import InterruptedJob, KeyStore, KeyWrapper, StoredKey, TokenStore, UnpairedOutcome
from vault_service.service.rotation_status import KeyStatus, RotationStatus

Interrupted = Callable[[], tuple[list[InterruptedJob], list[UnpairedOutcome]]]
"""`interrupted()`: the key operations whose process ended between their intent and outcome rows, and the outcome
rows naming an intent row they cannot pair with (forged or duplicate: review 33, R33-5)."""


class KeyStatusReader:
    """`status()` on the serving stores, each loaded data key unwrapped only when its wrapped key is new to it."""

    def __init__(
        self, key_store: KeyStore, tokens: TokenStore, wrapper: KeyWrapper, keys: KeyManager, interrupted: Interrupted
    ) -> None:
        self._key_store = key_store
        self._tokens = tokens
        self._wrapper = wrapper
        self._keys = keys
        self._interrupted = interrupted
        self._lock = threading.Lock()
        self._checked: dict[int, tuple[str, bytes]] = {}  # key id -> (wrapped key, check value) unwrapped and matched

    def status(self) -> RotationStatus:
        """KEK versions, data keys, the work left, interrupted key operations; KeysUnavailable if a key won't load."""
        rows = self._key_store.load_keys()
        kek = self._wrapper.kek_versions()
        twice = one_key_under_two_ids(rows, self._check_values(rows, kek.min_decryption))
        if twice is not None:
            raise KeysUnavailable(twice)
        generation = generation_of(rows)
        # To re-index: rows without a next fingerprint under the pending key; to compact: every fingerprint
        # not under the newest key (chaos 50, V50-5: the re-index's count was the latter).
        left = self._tokens.work_left(
            generation.encryption_id, generation.fingerprint_id, generation.pending_fingerprint_id
        )
        interrupted, unpaired = self._interrupted()
        return RotationStatus(
            kek.latest,
            [KeyStatus(k.key_id, k.purpose, k.state, k.kek_version) for k in rows],
            left["reencrypt"],
            left["reindex"],
            kek.min_decryption,
            kek.min_encryption,
            tuple(interrupted),
            tuple(unpaired),
            left["compact"],
        )

    def _check_values(self, rows: list[StoredKey], min_decryption: int) -> dict[int, bytes]:
        """Key id -> check value of each loaded key; Transit asked only for a wrapped key not matched yet."""
        with self._lock:
            checked = {}
            for row in filter(loaded, rows):
                seen = self._checked.get(row.key_id)
                if seen is None or seen[0] != row.wrapped_key or row.kek_version < min_decryption:
                    self._checked.pop(row.key_id, None)
                    seen = (row.wrapped_key, check_value(self._keys.unwrapped(row).material))
                    self._checked[row.key_id] = seen
                checked[row.key_id] = seen[1]
            for gone in self._checked.keys() - checked.keys():
                del self._checked[gone]
            return checked
