"""The interfaces the use cases need; adapters implement them, unit tests fake them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from vault_service.domain.audit import AuditEvent, AuditRecord
from vault_service.domain.keys import KeyPurpose, KeyState
from vault_service.domain.rate_limit import RateLimit


@dataclass(frozen=True)
class StoredKey:
    """A row of vault.data_keys: a data key wrapped by the KEK."""

    key_id: int
    purpose: KeyPurpose
    wrapped_key: str
    state: KeyState
    check_value: bytes | None = None
    """The key's check value (domain/key_check.py); None for a key made before migration 0024."""

    @property
    def kek_version(self) -> int:
        """The KEK version that wrapped this key, read from Transit's `vault:v<N>:` prefix."""
        try:
            return int(self.wrapped_key.split(":", 2)[1].removeprefix("v"))
        except (IndexError, ValueError):
            return 0


class EraseRow(NamedTuple):
    """An erase row of the audit log as the erased-token set reads it: with what checks it against the chain.

    `record` is the row whole (`revealed` in the binary form the chain trigger hashed), None when its fields take
    more than any audit row the vault writes (MAX_ROW_BYTES: not fetched, so it cannot be checked);
    `next_prev_hash` is the `prev_hash` of the row after it in id order (None when it is the log's newest row).
    """

    record_id: int
    record: AuditRecord | None
    next_prev_hash: bytes | None


class EraseRowsPage(NamedTuple):
    """A page of erase rows in id order, the log's newest id when the page was read, and whether more may follow.

    `newest_id` is the newest within the audit id sequence (the page ends there); `beyond_id` the log's newest id when
    it is beyond the sequence (a row written behind the chain trigger's back: attack 45, A45-1), else 0.
    """

    rows: list[EraseRow]
    newest_id: int
    more: bool
    beyond_id: int = 0


class NewKey(NamedTuple):
    """A fresh data key as stored: wrapped by the KEK, with its check value."""

    wrapped_key: str
    check_value: bytes


@dataclass(frozen=True)
class KeyGeneration:
    """Which keys new tokens are written with.

    Writers check it under a lock before inserting, so a replica that has not yet seen a
    rotation can never write with outdated keys.
    """

    encryption_id: int
    fingerprint_id: int
    pending_fingerprint_id: int | None = None


class StaleKeys(Exception):
    """The keys a writer used are no longer the live ones: refresh the key ring and retry."""

    stored_nothing = False
    """Set by the token store when none of the call's transactions may have committed (an `insert_new` that
    stored its own values, then met stale keys for values another call of the process was inserting, did)."""


class ValuesNotStored(Exception):
    """New values neither stored by this writer nor found in another writer's row (erased since): look again."""


class NewTokenRow(NamedTuple):
    """A token to insert, with its sealed value.

    A NamedTuple, not a frozen dataclass: one is built per new token, and a frozen dataclass's
    `__init__` cost 0.8 µs of the vault's ~15 µs per new token (`_make` over a zip: 0.2 µs).
    """

    token: str
    token_type: str
    fingerprint: bytes
    fingerprint_key_id: int
    dek_id: int
    sealed: bytes
    next_fingerprint: bytes | None = None


class StoredToken(NamedTuple):
    """A token row as read for detokenization; `sealed` is None once erased.

    A NamedTuple: Detokenize reads one per token, and the database's row tuples become these in C.
    """

    token: str
    token_type: str
    dek_id: int
    sealed: bytes | None
    erased: bool = False
    """`erased_at` is set: the row was erased, whatever `sealed` holds (a value there again is the erasure undone
    in the database, attack 41, A41-2: never revealed)."""


class KeptCopy(NamedTuple):
    """A value a re-seal replaced, kept under its old key (migration 0020), with what its token holds now."""

    token: str
    token_type: str
    kept: bytes
    """The sealed value as it was before the re-seal, under the key the copies were read for."""
    dek_id: int
    """The key the token's value is sealed under now."""
    sealed: bytes
    """The token's value now."""


class ErasedToken(NamedTuple):
    """A vault.tokens row whose value was erased: what `audit verify` reconciles with the erase rows."""

    token: str
    token_type: str
    erased_at: datetime


FoundToken = tuple[bytes, str, int, bytes | None, bool]
"""A token row as found by fingerprint for Tokenize: (fingerprint, token, data key id, sealed value, erased).

`erased`: the row's `erased_at` is set - its value and fingerprint were cleared once, so a row found
by fingerprint that says so is an erasure undone in the database (attack 41, A41-2), never a token.

A plain tuple, as the database's row arrives (no object made per row: Tokenize finds one per
repeated value); its sealed value is opened to check that the row holds the value looked up.
"""


class Inserted(NamedTuple):
    """What `insert_new` stored, and the rows of the values another writer had stored first."""

    ours: dict[bytes, str]
    """Fingerprint -> the token this writer issued, for the rows it stored."""
    theirs: dict[bytes, FoundToken]
    """Fingerprint -> the row another writer stored first, read back as the lookup reads it (checked by the caller)."""

    def tokens(self) -> dict[bytes, str]:
        """Fingerprint -> token, ours or the other writer's."""
        return {**self.ours, **{fp: row[1] for fp, row in self.theirs.items()}}


class StoredHits(NamedTuple):
    """What `TokenStore.stored_among` found: the fingerprints with a value stored, and whether a token was issued."""

    fingerprints: frozenset[bytes]
    token: bool


class KeyWrapper(Protocol):
    """The KEK in Vault Transit: makes and unwraps data keys; never gives out the KEK."""

    def new_data_key(self) -> tuple[bytes, str]:
        """A fresh 256-bit key: (plaintext, wrapped)."""
        ...

    def unwrap(self, wrapped_key: str) -> bytes:
        """The plaintext of a wrapped data key."""
        ...

    def rewrap(self, wrapped_key: str) -> str:
        """The same data key wrapped by the newest KEK version."""
        ...

    def latest_version(self) -> int:
        """The newest version of the KEK."""
        ...

    def kek_versions(self) -> KekVersions:
        """The KEK's latest version and its min_decryption_version / min_encryption_version (one read)."""
        ...


@dataclass(frozen=True)
class KekVersions:
    """The KEK's version settings in Transit."""

    latest: int
    min_decryption: int
    min_encryption: int
    """0 while never set (Transit then encrypts with the latest version, as it does anyway)."""


class KekConfig(Protocol):
    """The KEK's version settings, read and written with the operator's own Vault token (not the service's)."""

    @property
    def name(self) -> str:
        """The KEK's name in Transit."""
        ...

    def versions(self) -> KekVersions:
        """Its latest version and its min_decryption_version / min_encryption_version."""
        ...

    def set_minimums(self, min_decryption: int, min_encryption: int) -> None:
        """Both settings in one config write (Transit checks the pair only after applying both)."""
        ...


class KeyStore(Protocol):
    """Persistent wrapped data keys."""

    def load_keys(self) -> list[StoredKey]:
        """Every key row."""
        ...

    def ensure_active_key(self, purpose: str, make_key: Callable[[], NewKey]) -> StoredKey:
        """The active key of `purpose`, created with `make_key()` if none exists.

        Safe against replicas starting at once: exactly one key ends up active. KeysUnavailable,
        making none, for a fingerprint key while stored values are fingerprinted under a key
        that is not live (a new key would give each of them a second token).
        """
        ...

    def add_key(self, purpose: str, wrapped_key: str, check_value: bytes | None = None) -> StoredKey:
        """Store a new key.

        Encryption: it becomes active, the old one decrypt_only. Fingerprint: it becomes
        pending (written alongside the active one until the re-index promotes it).
        """
        ...

    def update_wrapping(self, key_id: int, wrapped_key: str) -> None:
        """Replace the wrapping of a key (after a KEK rewrap)."""
        ...

    def record_check_values(self, check_values: Mapping[int, bytes]) -> None:
        """Record the check value of keys that have none yet (made before migration 0024)."""
        ...

    def promote_pending_fingerprint_key(self) -> bool:
        """Pending fingerprint key -> active, old one -> retired, if every live row is re-indexed.

        False (nothing changed) while rows still lack a fingerprint under the pending key.
        """
        ...

    def retire_unused_encryption_keys(self, key_ids: Sequence[int]) -> list[int]:
        """Retire those of `key_ids` that are decrypt_only DEKs no row uses any more; their ids."""
        ...


Resealer = Callable[[Sequence[StoredToken]], list[tuple[str, int, bytes]]]
"""Rows -> (token, new dek id, new sealed value)."""
Reindexer = Callable[[Sequence[StoredToken]], list[tuple[str, bytes]]]
"""Rows -> (token, fingerprint under the pending key)."""


class TokenStore(Protocol):
    """Persistent tokens, found by fingerprint or by token text."""

    def find_by_fingerprints(self, token_type: str, fingerprints: Sequence[bytes]) -> dict[bytes, FoundToken]:
        """Fingerprint -> its row (with the sealed value, to check it holds the value) for those already known."""
        ...

    def insert_new(self, rows: Sequence[NewTokenRow], generation: KeyGeneration) -> Inserted:
        """Insert rows; where another writer won the race, read its row back instead (`Inserted`).

        Raises StaleKeys, inserting nothing, when `generation` is not the live one.
        """
        ...

    def fetch(self, tokens: Sequence[str]) -> dict[str, StoredToken]:
        """The rows of the tokens that exist."""
        ...

    def fetch_seeing(self, tokens: Sequence[str]) -> tuple[dict[str, StoredToken], int | None]:
        """The rows of the tokens that exist, and the audit log's newest id the same read saw (None: not known)."""
        ...

    def stored_among(
        self, types: Sequence[str], fingerprints: Sequence[bytes], tokens: Sequence[str] = ()
    ) -> StoredHits:
        """Which (type, fingerprint) pairs have a value stored (not erased), and whether one of `tokens` was issued.

        Of the same work whether or not anything is found (every pair and token is probed).
        """
        ...

    def erase(self, tokens: Sequence[str], event: AuditEvent) -> set[str]:
        """Destroy the ciphertext and fingerprints of these tokens; the ones that had a value.

        `event.revealed` holds the keyed hash of each of `tokens`, in order; the audit row,
        written with the erasure, keeps those of the tokens erased.
        """
        ...

    def last_erasure(self) -> object:
        """Something that changes whenever a value is erased (to invalidate caches)."""
        ...

    def erase_rows(self, after_id: int, limit: int) -> EraseRowsPage:
        """The first `limit` served erase rows after `after_id`, in id order, each with its fields and the next link.

        The erased tokens' hashes each replica keeps out of `vault.tokens` (`erased_tokens.py`, attack 43), learned
        only from rows that hash and link as the chain does (attack 44, A44-3).
        """
        ...

    def remember_erase_rows(self, rows: Sequence[tuple[int, tuple[bytes, bytes]]]) -> None:
        """Have the audit upkeep check that the chain it anchors holds these erase rows (id, (prev_hash, row_hash)).

        As this replica's own erase rows are (b6b5b7b): a row learned and then changed back or removed by the
        database owner is named in the next exported checkpoint (attack 44, A44-3). Nothing when not anchored.
        """
        ...

    def take_budget(self, client: str, kind: str, need: int, want: int, limit: RateLimit) -> tuple[int, float] | None:
        """Take `need` to `want` items from the client's `kind` bucket, shared by all replicas and kept across restarts.

        (items taken, 0) when `need` fitted, else (0, seconds until it would fit) and nothing is
        taken; None when the store has no such buckets yet (a database not yet migrated).
        """
        ...

    def reseal_batch(
        self, active_dek_id: int, limit: int, reseal: Resealer, actor: str = "vault-service", skip: Sequence[str] = ()
    ) -> int:
        """Re-encrypt up to `limit` rows not under `active_dek_id` and not in `skip` with `reseal`; rows read."""
        ...

    def reindex_batch(
        self,
        pending_key_id: int,
        limit: int,
        reindex: Reindexer,
        actor: str = "vault-service",
        skip: Sequence[str] = (),
    ) -> int:
        """Fill in the fingerprint under the pending key for up to `limit` rows not in `skip`; rows read."""
        ...

    def pending_fingerprints_batch(
        self, pending_key_id: int, after_id: int, limit: int
    ) -> tuple[int, list[tuple[StoredToken, bytes]]]:
        """Live rows past row id `after_id` with their next fingerprint under the pending key; the last id read."""
        ...

    def kept_copies_batch(self, dek_id: int, after_id: int, limit: int) -> tuple[int, list[KeptCopy]]:
        """Kept copies under `dek_id` past kept id `after_id` whose token still holds a value; the last id read."""
        ...

    def clear_next_fingerprints(self, found: Sequence[tuple[str, bytes]], actor: str = "vault-service") -> int:
        """Clear these (token, next fingerprint) pairs under the pending key where still stored; rows cleared."""
        ...

    def compact_batch(self, active_fingerprint_id: int, limit: int, actor: str = "vault-service") -> int:
        """Move re-indexed fingerprints into place for up to `limit` rows; rows done."""
        ...

    def work_left(
        self, active_dek_id: int, active_fingerprint_id: int, pending_fingerprint_id: int | None = None
    ) -> dict[str, int]:
        """Rows still to re-encrypt, to re-index (no next fingerprint under the pending key) and to compact."""
        ...

    def fingerprints_left(self, active_fingerprint_id: int, up_to: int) -> int:
        """Live rows whose fingerprint is not under `active_fingerprint_id`, counted up to `up_to`."""
        ...


class CatalogAdditions(Protocol):
    """What the database owner added where the vault's SQL resolves names (attack 45, A45-3/A45-4)."""

    def catalog_additions(self) -> tuple[str, ...]:
        """Each object in pg_catalog the server did not ship, inheritance of vault relations.

        In words (oids >= 16384 in those schemas; inheritance or partition links of a vault relation); () on a
        database the migrations alone made. CatalogUnread when the live database answers the check with an error
        (itself a finding: review 40, R40-2); DatabaseUnavailable when it is down, CatalogCheckInterrupted (one)
        when its query was cancelled or timed out on every try (attack 48, A48-1: an outage, not a finding).
        """
        ...


class AuditLog(Protocol):
    """Append-only audit log."""

    def append(self, event: AuditEvent) -> int:
        """Write one record durably and return its id, or raise (AuditUnavailable when storage refuses it)."""
        ...


KEY_JOB_ACTIONS = (
    "reencrypt",
    "reindex",
    "rewrap",
    "rotate-encryption-key",
    "rotate-fingerprint-key",
    "retire-kek-versions",
)
"""The key operations whose intent row (`started`) a live process holds until its outcome row (JobLiveness)."""

INTENT_UNHELD = "started"
"""The intent row of a key operation run with no hold (code before 7bd4f63, or KeyRotation without liveness)."""
INTENT_HELD = "started (held; its outcome row names this row)"
"""The intent row of a key operation whose process holds it (JobLiveness): only these can be found interrupted.

Every outcome row of its job names it (`names_intent`), and only a row naming it pairs with it (review 33, R33-5).
An intent row `started` may be a live job of an older replica or admin image that holds nothing (review 32, F2)."""
INTENT_HELD_UNNAMED = "started (held)"
"""The held intent row of code before review 33's R33-5 fix: its outcome rows name no intent row, so it pairs with
the latest outcome row after it that names none (a stack). Listed and closed like an INTENT_HELD row."""
CLOSING_PREFIX = "failed: interrupted, the process ended (intent row "
"""How the outcome row of an interrupted operation begins, followed by its intent row's id: it pairs with that row."""
HOLD_LOST_NOTE = (
    " (the job's hold on the database had ended before this row: an `interrupted` outcome row may precede it)"
)
"""Appended to an outcome row written once the job's hold is gone (its session ended): review 32, F4."""
NAMED_INTENT = " (intent row {intent_id})"
"""How every other outcome row of a key operation ends: it pairs with the intent row of that id (`names_intent`)."""


def names_intent(outcome: str, intent_id: int | None) -> str:
    """`outcome` naming its job's intent row (review 33, R33-5), as it ends its audit row; as is when unknown."""
    return outcome if intent_id is None else outcome + NAMED_INTENT.format(intent_id=intent_id)


@dataclass(frozen=True)
class InterruptedJob:
    """A key operation's intent row with no outcome row and no live process holding it: its process ended.

    What `status` shows and what its `failed: interrupted` outcome row repeats (client, serial and
    certificate digest, action and ticket of the intent row).
    """

    intent_id: int
    at: datetime
    action: str
    client: str
    client_serial: str
    client_cert_sha256: str
    purpose: str

    def describe(self) -> str:
        """`reencrypt started by 'security-team' (serial 1a) at 2026-12-05 13:10:04 UTC under CHG-1 (audit row 42)`."""
        serial = f" (serial {self.client_serial})" if self.client_serial else ""
        since = self.at.strftime("%Y-%m-%d %H:%M:%S UTC")
        started = f"{self.action} started by {self.client!r}{serial} at {since}"
        return f"{started} under {self.purpose} (audit row {self.intent_id})"


@dataclass(frozen=True)
class UnpairedOutcome:
    """A key operation's outcome row naming an intent row it cannot pair with (review 33, R33-5): forged or duplicate.

    The intent row it names was paired already by an earlier outcome row (`paired_by`), or is no intent row of
    the same client, serial, action and ticket before it (`paired_by` 0). The vault writes one outcome row per
    intent row, naming it: another was appended by someone else (the serving role can append rows). Its text is
    not shown (whoever wrote it chose it).
    """

    outcome_id: int
    at: datetime
    action: str
    client: str
    client_serial: str
    purpose: str
    intent_id: int
    paired_by: int

    def describe(self) -> str:
        """`rewrap outcome row 57 by 'security-team' (serial 1a) at ... under CHG-1 names intent row 42, ...`."""
        serial = f" (serial {self.client_serial})" if self.client_serial else ""
        since = self.at.strftime("%Y-%m-%d %H:%M:%S UTC")
        why = (
            f"which outcome row {self.paired_by} paired with already (a duplicate)"
            if self.paired_by
            else "which is no earlier intent row of that job"
        )
        return (
            f"{self.action} outcome row {self.outcome_id} as {self.client!r}{serial} at {since} under {self.purpose}"
            f" names intent row {self.intent_id}, {why}"
        )


class JobLiveness(Protocol):
    """Which key operations still have a live process: each holds its intent row while it runs.

    The hold dies with the process's database session (SIGKILL, OOM, node loss), so an intent row
    with no outcome row and no holder is an interrupted operation (`interrupted`).
    """

    def hold(self, action: str, client: str, client_serial: str, purpose: str) -> None:
        """Hold the intent row of `action` about to be written, until `release`: taken BEFORE the row is."""
        ...

    def check(self) -> None:
        """Raise (a VaultError) when a hold taken was lost (its session ended): the job stops."""
        ...

    def interrupted(self) -> list[InterruptedJob]:
        """The intent rows with no outcome row whose holder is gone, oldest first."""
        ...

    def unpaired_outcomes(self) -> list[UnpairedOutcome]:
        """The outcome rows naming an intent row they cannot pair with (forged or duplicate), oldest first."""
        ...

    def claimed(self, job: InterruptedJob) -> AbstractContextManager[bool]:
        """While in it, no process can take `job`'s hold; whether `job` is still open and unheld (write its outcome)."""
        ...

    def release(self) -> None:
        """Let go of every hold (after the outcome rows are written)."""
        ...
