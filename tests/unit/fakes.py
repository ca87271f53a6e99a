"""In-memory fakes of the ports, for unit tests of the use cases."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from etl_service.domain.messages import EventKey, QuarantineRecord, QueueMessage, UserLoginRow, event_id_reused
from etl_service.errors import DependencyDown
from etl_service.service.ports import LoadedBefore, QueueDepth, ReusedEventId, TakeBack, WriteResult
from vault_service.domain.audit import AuditEvent
from vault_service.domain.errors import KeysUnavailable
from vault_service.domain.keys import KeyPurpose, KeyState
from vault_service.domain.rate_limit import RateLimit
from vault_service.service.ports import (
    EraseRowsPage,
    FoundToken,
    Inserted,
    KekVersions,
    KeptCopy,
    KeyGeneration,
    NewKey,
    NewTokenRow,
    Reindexer,
    Resealer,
    StaleKeys,
    StoredHits,
    StoredKey,
    StoredToken,
)


class FakeKeyWrapper:
    """Wraps by prefixing with the KEK version; enough to exercise key loading and rewrap."""

    def __init__(self) -> None:
        self.unwrapped: list[str] = []
        self.version = 1
        self.min_decryption = 1
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise KeysUnavailable("Vault is down (fake)")

    def new_data_key(self) -> tuple[bytes, str]:
        self._check()
        key = os.urandom(32)
        return key, f"vault:v{self.version}:" + key.hex()

    def unwrap(self, wrapped_key: str) -> bytes:
        self._check()
        self.unwrapped.append(wrapped_key)
        return bytes.fromhex(wrapped_key.split(":", 2)[2])

    def rewrap(self, wrapped_key: str) -> str:
        self._check()
        return f"vault:v{self.version}:" + wrapped_key.split(":", 2)[2]

    def latest_version(self) -> int:
        self._check()
        return self.version

    def kek_versions(self) -> KekVersions:
        self._check()
        return KekVersions(self.version, self.min_decryption, 0)


class FakeKeyStore:
    def __init__(self) -> None:
        self.keys: list[StoredKey] = []

    def load_keys(self) -> list[StoredKey]:
        return list(self.keys)

    def _set_state(self, key_id: int, state: str) -> None:
        self.keys = [replace(k, state=KeyState(state)) if k.key_id == key_id else k for k in self.keys]

    def _add(self, purpose: str, wrapped: str, state: str) -> StoredKey:
        key = StoredKey(len(self.keys) + 1, KeyPurpose(purpose), wrapped, KeyState(state))
        self.keys.append(key)
        return key

    def ensure_active_key(self, purpose: str, make_key: Callable[[], NewKey]) -> StoredKey:
        for key in self.keys:
            if key.purpose == purpose and key.state == "active":
                return key
        return self._add(purpose, make_key().wrapped_key, "active")

    def add_key(self, purpose: str, wrapped_key: str, check_value: bytes | None = None) -> StoredKey:
        if purpose == "encryption":
            for key in self.keys:
                if key.purpose == purpose and key.state == "active":
                    self._set_state(key.key_id, "decrypt_only")
            return self._add(purpose, wrapped_key, "active")
        return self._add(purpose, wrapped_key, "pending")

    def update_wrapping(self, key_id: int, wrapped_key: str) -> None:
        self.keys = [replace(k, wrapped_key=wrapped_key) if k.key_id == key_id else k for k in self.keys]

    def record_check_values(self, check_values: Mapping[int, bytes]) -> None:
        self.keys = [replace(k, check_value=check_values.get(k.key_id, k.check_value)) for k in self.keys]

    def generation(self) -> KeyGeneration:
        def one(purpose: str, state: str) -> int | None:
            return next((k.key_id for k in self.keys if k.purpose == purpose and k.state == state), None)

        encryption, fingerprint = one("encryption", "active"), one("fingerprint", "active")
        assert encryption is not None and fingerprint is not None
        return KeyGeneration(encryption, fingerprint, one("fingerprint", "pending"))

    def promote_pending_fingerprint_key(self) -> bool:
        raise NotImplementedError  # re-index is tested against Postgres

    def retire_unused_encryption_keys(self, key_ids: Sequence[int]) -> list[int]:
        raise NotImplementedError  # re-encryption is tested against Postgres


class FakeTokenStore:
    """Rows by token; checks the key generation like the real store when given a key store."""

    def __init__(self, key_store: FakeKeyStore | None = None) -> None:
        self.rows: dict[str, NewTokenRow] = {}
        self.erased: set[str] = set()
        self.erase_events: list[AuditEvent] = []
        self.key_store = key_store
        self.erasures = 0
        self.buckets: dict[tuple[str, str], tuple[float, float]] = {}  # (client, kind) -> (level, updated)
        self.budget_takes = 0  # round trips to the shared budgets
        self.clock: Callable[[], float] = time.monotonic
        self.has_budgets = True
        self.gives_back = True  # False: a database without 0074's vault.give_back_erase_budget
        self.stored_among_calls = 0  # lookups of the values a purpose names (stored_values)
        self.fails: dict[str, Exception] = {}  # method name (fetch, erase, give_back_budget) -> the error it raises

    def find_by_fingerprints(self, token_type: str, fingerprints: Sequence[bytes]) -> dict[bytes, FoundToken]:
        wanted = set(fingerprints)
        found: dict[bytes, FoundToken] = {}
        for r in self.rows.values():
            if r.token_type == token_type and r.token not in self.erased:
                for fp in (r.fingerprint, r.next_fingerprint):
                    if fp in wanted:
                        found[fp] = (fp, r.token, r.dek_id, r.sealed, False)
        return found

    def stored_among(
        self, types: Sequence[str], fingerprints: Sequence[bytes], tokens: Sequence[str] = ()
    ) -> StoredHits:
        self.stored_among_calls += 1
        found = frozenset(fp for t, fp in zip(types, fingerprints, strict=True) if self.find_by_fingerprints(t, [fp]))
        return StoredHits(found, any(token in self.rows for token in tokens))

    def insert_new(self, rows: Sequence[NewTokenRow], generation: KeyGeneration) -> Inserted:
        if self.key_store is not None and self.key_store.generation() != generation:
            raise StaleKeys("fake generation changed")
        result = Inserted({}, {})
        for row in rows:
            existing = self.find_by_fingerprints(row.token_type, [row.fingerprint])
            if existing:
                result.theirs.update(existing)
            else:
                self.rows[row.token] = row
                result.ours[row.fingerprint] = row.token
        return result

    def fetch_seeing(self, tokens: Sequence[str]) -> tuple[dict[str, StoredToken], int | None]:
        return self.fetch(tokens), None

    def fetch(self, tokens: Sequence[str]) -> dict[str, StoredToken]:
        self._fail("fetch")
        return {
            t: StoredToken(
                t, self.rows[t].token_type, self.rows[t].dek_id, None if t in self.erased else self.rows[t].sealed
            )
            for t in tokens
            if t in self.rows
        }

    def erase(self, tokens: Sequence[str], event: AuditEvent) -> set[str]:
        self._fail("erase")
        done = {t for t in tokens if t in self.rows and t not in self.erased}
        self.erase_events.append(event)
        self.erased |= done
        self.erasures += bool(done)
        return done

    def last_erasure(self) -> object:
        return self.erasures

    def erase_rows(self, after_id: int, limit: int) -> EraseRowsPage:
        return EraseRowsPage([], 0, False)

    def remember_erase_rows(self, rows: Sequence[tuple[int, tuple[bytes, bytes]]]) -> None:
        pass

    def take_budget(self, client: str, kind: str, need: int, want: int, limit: RateLimit) -> tuple[int, float] | None:
        """One bucket per (client, kind), like vault.call_budget, on this fake's clock (None: a store without them)."""
        self.budget_takes += 1
        if not self.has_budgets:
            return None
        now = self.clock()
        level, updated = self.buckets.get((client, kind), (float(limit.burst), now))
        level = min(limit.burst, level + max(0.0, now - updated) * limit.per_second)
        if need <= level:
            granted = min(want, int(level))
            self.buckets[(client, kind)] = (level - granted, now)
            return granted, 0.0
        self.buckets[(client, kind)] = (level, now)
        return 0, (need - level) / limit.per_second

    def give_back_budget(self, client: str, kind: str, count: int, limit: RateLimit) -> bool:
        """Put `count` back in an erase bucket, up to the burst, as vault.give_back_erase_budget (0074) does."""
        self._fail("give_back_budget")
        if not self.has_budgets or not self.gives_back or kind != "erase":
            return False
        level, updated = self.buckets.get((client, kind), (float(limit.burst), self.clock()))
        self.buckets[(client, kind)] = (min(float(limit.burst), level + count), updated)
        return True

    def _fail(self, method: str) -> None:
        """Raise the error `fails` holds for `method`, if any (a store that fails there)."""
        if method in self.fails:
            raise self.fails[method]

    # The rotation jobs' batches run against Postgres only (tests/integration/test_key_rotation.py).
    def reseal_batch(
        self, active_dek_id: int, limit: int, reseal: Resealer, actor: str = "", skip: Sequence[str] = ()
    ) -> int:
        raise NotImplementedError

    def reindex_batch(
        self, pending_key_id: int, limit: int, reindex: Reindexer, actor: str = "", skip: Sequence[str] = ()
    ) -> int:
        raise NotImplementedError

    def pending_fingerprints_batch(
        self, pending_key_id: int, after_id: int, limit: int
    ) -> tuple[int, list[tuple[StoredToken, bytes]]]:
        raise NotImplementedError

    def kept_copies_batch(self, dek_id: int, after_id: int, limit: int) -> tuple[int, list[KeptCopy]]:
        raise NotImplementedError

    def clear_next_fingerprints(self, found: Sequence[tuple[str, bytes]], actor: str = "") -> int:
        raise NotImplementedError

    def compact_batch(self, active_fingerprint_id: int, limit: int, actor: str = "") -> int:
        raise NotImplementedError

    def work_left(
        self, active_dek_id: int, active_fingerprint_id: int, pending_fingerprint_id: int | None = None
    ) -> dict[str, int]:
        raise NotImplementedError

    def fingerprints_left(self, active_fingerprint_id: int, up_to: int) -> int:
        raise NotImplementedError


class FakeAuditLog:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[AuditEvent] = []
        self.fail = fail

    def append(self, event: AuditEvent) -> int:
        if self.fail:
            raise OSError("audit storage unavailable")
        self.events.append(event)
        return len(self.events)


class FakeQueue:
    """Records what the batch processor does to messages, in order."""

    def __init__(self, dlq_fails: bool = False) -> None:
        self.actions: list[tuple[str, str]] = []
        self.dead_lettered: list[tuple[str, str]] = []
        self.dead_letter_bodies: list[str] = []
        self.dead_letter_details: list[str] = []
        self.dead_letter_event_ids: list[str | None] = []
        """The event_id attribute each dead letter went with (SqsQueue.dead_letter copies the message's)."""
        self.redriven: list[QueueMessage] = []
        """Messages SQS's redrive policy moved to the DLQ (no reason); take_back_redriven returns them."""
        self.retry_delays: list[int] = []
        self.dlq_fails = dlq_fails
        self.pending: list[QueueMessage] = []
        self.lock = threading.Lock()
        self.receives = 0
        self.in_flight = 0
        self.extended = 0
        self.lease_seconds = 60  # the consumer's visibility_seconds: changes to it are heartbeats
        self.dead_letter_listing_lease_seconds = 60

    def receive(self, max_messages: int, wait_seconds: int) -> list[QueueMessage]:
        with self.lock:
            batch, self.pending = self.pending[:max_messages], self.pending[max_messages:]
            self.receives += 1
            self.in_flight += len(batch)
        if not batch and wait_seconds:
            time.sleep(0.01)
        return batch

    def delete(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        with self.lock:
            self.actions += [("delete", m.message_id) for m in messages]
            self.in_flight -= len(messages)
        return []

    def dead_letter(self, message: QueueMessage, reason: str, detail: str, body: str) -> None:
        if self.dlq_fails:
            raise DependencyDown("DLQ down")
        self.actions.append(("dead_letter", message.message_id))
        self.dead_lettered.append((message.message_id, reason))
        self.dead_letter_bodies.append(body)
        self.dead_letter_details.append(detail)
        self.dead_letter_event_ids.append(message.event_id)

    def change_visibility(self, messages: Sequence[QueueMessage], seconds: int) -> list[QueueMessage]:
        with self.lock:
            kind = "release" if seconds == 0 else "extend" if seconds == self.lease_seconds else "retry"
            self.actions += [(kind, m.message_id) for m in messages]
            if kind == "retry":
                self.retry_delays.append(seconds)
            if kind in ("retry", "release"):  # visible again (at once: the fake has no clock)
                self.pending += [replace(m, receive_count=m.receive_count + 1) for m in messages]
                self.in_flight -= len(messages)
            if kind == "extend":
                self.extended += len(messages)
        return []

    def depth(self) -> QueueDepth:
        with self.lock:
            return QueueDepth(len(self.pending), self.in_flight, 0)

    def take_back_redriven(self) -> TakeBack:
        with self.lock:
            taken, self.redriven = self.redriven, []
            self.pending += [replace(m, receive_count=1) for m in taken]
        return TakeBack(len(taken), held_elsewhere=0 if taken else self.dead_letters_held())  # as counted again

    def dead_letters_held(self) -> int:
        return 0


class FakeTokenizer:
    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.calls: list[tuple[list[str], list[str]]] = []

    def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        if self.down:
            raise DependencyDown("vault service UNAVAILABLE", "vault")
        self.calls.append((list(ips), list(device_ids)))
        return {v: f"ip_{abs(hash(v))}" for v in ips}, {v: f"dev_{abs(hash(v))}" for v in device_ids}

    def ready(self) -> None:
        if self.down:
            raise DependencyDown("vault service UNAVAILABLE", "vault")


class FakeLoginStore:
    def __init__(self, queue: FakeQueue | None = None, down: bool = False) -> None:
        self.rows: dict[str, UserLoginRow] = {}
        self.quarantine: dict[str, QuarantineRecord] = {}
        self.queue = queue
        self.down = down

    def loaded_before(self, events: Sequence[EventKey]) -> LoadedBefore:
        if self.down:
            raise DependencyDown("Postgres unavailable", "database")
        found = [e for e in events if e.event_id in self.rows]
        reused = [e for e in found if _without_tokens(e) != _without_tokens(self.rows[e.event_id])]
        return LoadedBefore(
            frozenset(e.sqs_message_id for e in found if e not in reused),
            tuple(ReusedEventId(e.sqs_message_id, self.rows[e.event_id].sqs_message_id) for e in reused),
        )

    def write(
        self, rows: Sequence[UserLoginRow], quarantined: Sequence[QuarantineRecord], manifest: object = None
    ) -> WriteResult:
        if self.down:
            raise DependencyDown("Postgres unavailable", "database")
        new_rows = []
        for r in rows:  # as ON CONFLICT DO NOTHING: the first row under an event_id of the batch too
            if r.event_id not in self.rows:
                self.rows[r.event_id] = r
                new_rows.append(r)
        # As public.user_logins_reused_event_ids: a skipped row differing in a column without a token.
        reused = [
            (r, self.rows[r.event_id].sqs_message_id)
            for r in rows
            if r not in new_rows and _without_tokens(r) != _without_tokens(self.rows[r.event_id])
        ]
        records = [*quarantined, *(event_id_reused(r, loaded) for r, loaded in reused)]
        new_q = [q for q in records if q.event_id not in self.quarantine]
        self.quarantine.update({q.event_id: q for q in new_q})
        if self.queue is not None:
            self.queue.actions.append(("commit", str(len(rows))))
        return WriteResult(len(new_rows), len(new_q), tuple(ReusedEventId(r.sqs_message_id, m) for r, m in reused))

    def ready(self) -> None:
        if self.down:
            raise DependencyDown("Postgres unavailable", "database")


def _without_tokens(row: UserLoginRow | EventKey) -> tuple[object, ...]:
    return (row.user_id, row.device_type, row.locale, row.app_version, row.app_version_text, row.create_date)
