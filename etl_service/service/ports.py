"""The interfaces the ETL needs; adapters implement them, unit tests fake them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from etl_service.domain.messages import EventKey, QuarantineRecord, QueueMessage, UserLoginRow
from etl_service.domain.row_manifest import RowManifest


@dataclass(frozen=True)
class QueueDepth:
    """Approximate message counts of a queue."""

    visible: int
    in_flight: int
    delayed: int

    @property
    def empty(self) -> bool:
        """No message waiting, invisible or delayed."""
        return self.visible == 0 and self.in_flight == 0 and self.delayed == 0


class TakeBack(NamedTuple):
    """What one take-back of DLQ messages that are no dead letters of the ETL's did."""

    taken: int
    """DLQ messages moved back to the source queue: without a reason, or not written by the ETL."""
    complete: bool = True
    """False when its DLQ listing was cut short (its limit reached, or its lease could have run
    out): a letter to take back may be left in the DLQ unread."""
    held_elsewhere: int = 0
    """When it took none: DLQ messages another reader held, or delayed, while its listing ran
    (unread, so perhaps to take back; SQS's approximate counts)."""
    crash_looped: int = 0
    """DLQ messages the redrive moved again after a take-back: sealed and dead-lettered in place as
    `crash_loop` instead of taken back (the ETL's take-back only; not counted in `taken`)."""


class Queue(Protocol):
    """The source queue and its dead-letter queue."""

    @property
    def dead_letter_listing_lease_seconds(self) -> int:
        """How long a take-back's DLQ listing holds the letters it reads (a killed drain's, for all of it).

        How long held dead letters may be one of those (service/drain_check.py).
        """
        ...

    def receive(self, max_messages: int, wait_seconds: int) -> list[QueueMessage]:
        """Up to `max_messages`, long-polling up to `wait_seconds`."""
        ...

    def delete(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        """Delete; return the messages whose deletion failed (never raises: they are redelivered)."""
        ...

    def dead_letter(self, message: QueueMessage, reason: str, detail: str, body: str) -> None:
        """Send `body` (the sealed envelope, never the clear body) to the DLQ with the reason as attributes."""
        ...

    def change_visibility(self, messages: Sequence[QueueMessage], seconds: int) -> list[QueueMessage]:
        """Make messages visible again `seconds` from now (0 releases them); return those that failed.

        Used to postpone a retry, to extend the lease of slow work (heartbeat) and to release
        messages at shutdown. Never raises: a failure leaves the current lease in place.
        """
        ...

    def depth(self) -> QueueDepth:
        """Approximate counts of the source queue."""
        ...

    def take_back_redriven(self) -> TakeBack:
        """Move DLQ messages SQS's redrive policy moved there back to the source queue.

        Those without a reason, and those that are no dead letter of the ETL's by their body,
        whatever their attributes (service/own_dead_letters.py). They keep their event id and sent
        time; returns how many, whether the DLQ was read whole, and how many letters another
        reader held meanwhile. DependencyDown if SQS or the proof of sealed letters fails.
        """
        ...

    def dead_letters_held(self) -> int:
        """DLQ messages someone holds invisible or that are delayed: unread, so perhaps reasonless.

        A drain killed while taking back leaves its listing's dead letters held for that lease;
        an operator's `dead-letters list` holds them too. DependencyDown if SQS fails.
        """
        ...


class Tokenizer(Protocol):
    """The vault service, as the ETL uses it."""

    def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        """(ip -> token, device_id -> token) for the distinct values given.

        Values the vault refuses are absent from the maps. Raises DependencyDown when the
        vault cannot be reached.
        """
        ...

    def ready(self) -> None:
        """Return if the vault service answers its health check, else raise DependencyDown."""
        ...


class ReusedEventId(NamedTuple):
    """A row not loaded because its event_id is loaded for a different event."""

    message_id: str
    """The SQS message id of the refused row."""
    loaded_message_id: str
    """The SQS message id of the row loaded under that event_id."""


@dataclass(frozen=True)
class WriteResult:
    """How many rows a batch added; the rest were already there (replays) or reused an event_id."""

    rows_inserted: int
    quarantined_inserted: int
    reused: tuple[ReusedEventId, ...] = ()
    """Rows refused because another event, different in a column that holds no token, is loaded
    under their event_id; their quarantine records (`event_id_reused`) were written with the batch."""


class LoadedBefore(NamedTuple):
    """What of a batch's accepted events user_logins already holds, asked before they are tokenized."""

    replays: frozenset[str]
    """SQS message ids of events loaded already as they are (the same in every column that holds no token)."""
    reused: tuple[ReusedEventId, ...] = ()
    """Events whose event_id is loaded for a different event."""


class LoginStore(Protocol):
    """user_logins and the quarantine table."""

    def loaded_before(self, events: Sequence[EventKey]) -> LoadedBefore:
        """Which of `events` are loaded already (replays) or reuse a loaded event's event_id; read, nothing written.

        Asked before the batch is tokenized, so that neither reaches the vault (attack 34, E1): the
        tokens minted for a replay after the person's erasure would store the erased values again
        under tokens no row holds. Told apart as `write` tells them (the columns without tokens).
        DependencyDown if the database is down, Misconfigured if it refuses the ETL.
        """
        ...

    def write(
        self, rows: Sequence[UserLoginRow], quarantined: Sequence[QuarantineRecord], manifest: RowManifest | None = None
    ) -> WriteResult:
        """Write both in one transaction, skipping keys already present. DependencyDown if down.

        `manifest`: the batch's signed list of row digests (RowSigner), inserted in the same transaction, each
        row naming it (attack 41, A41-1); None: the rows name none (an ETL that signs nothing).

        A skipped row is a replay when the row loaded under its event_id matches it in every
        column that holds no token; otherwise it is reported in `reused` and quarantined as
        `event_id_reused` in the same transaction. `loaded_before` sets both aside before the
        vault; rows skip here only when another consumer loaded their event meanwhile.
        """
        ...

    def ready(self) -> None:
        """Return if the database answers, else raise DependencyDown."""
        ...


class RowSigner(Protocol):
    """Signs a load batch's list of row digests with the ETL's own Transit key (tokenvault-login-rows)."""

    def sign_login_rows(self, message: bytes) -> str:
        """Transit's `vault:vN:<base64>` ed25519 signature of `message`.

        DependencyDown when OpenBao does not answer (the batch is postponed), Misconfigured when it refuses
        (the policy or the key): no row is ever loaded unsigned.
        """
        ...


class BodySealer(Protocol):
    """Seals the bodies of refused messages before they go to the DLQ (see service/sealing.py)."""

    key_name: str | None
    """The ETL's dead-letter key (ETL_DLQ_SEAL_KEY), which recognises its own sealed envelopes moved back
    to the source queue: the sealing key, and kept by a sealer that keeps no body (letters sealed before
    the switch to ETL_DLQ_BODIES=discard); None only when no key is known."""

    def seal(self, bodies: Sequence[str], minted: Sequence[Sequence[str]] | None = None) -> list[str]:
        """The DLQ envelope for each body. DependencyDown or Misconfigured when sealing fails.

        `minted`, when given, holds for each body the tokens the vault minted for its message (none:
        empty): a sealer that can seal them records them in its envelope (sealing.py, `minted_tokens`).
        """
        ...

    def authentic(self, ciphertexts: Sequence[str]) -> frozenset[str]:
        """Those of `ciphertexts` that are genuine ciphertexts under the dead-letter key, proven without opening them.

        Asked only for envelopes shaped as the ETL's own moved back to the source queue
        (service/returned_letters.py): one call per batch that holds any. A sealer that cannot ask
        proves none. DependencyDown or Misconfigured when the proof cannot be had.
        """
        ...
