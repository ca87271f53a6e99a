"""In-memory fakes of the ports, for unit tests of the use cases."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from etl_service.domain.messages import QuarantineRecord, QueueMessage, UserLoginRow
from etl_service.service.ports import QueueDepth, TransientError, WriteResult
from vault_service.domain.audit import AuditEvent
from vault_service.service.ports import NewTokenRow, StoredKey, StoredToken


class FakeKeyWrapper:
    """Wraps by prefixing; enough to exercise key loading."""

    def __init__(self) -> None:
        self.unwrapped: list[str] = []

    def new_data_key(self) -> tuple[bytes, str]:
        key = os.urandom(32)
        return key, "wrapped:" + key.hex()

    def unwrap(self, wrapped_key: str) -> bytes:
        self.unwrapped.append(wrapped_key)
        return bytes.fromhex(wrapped_key.removeprefix("wrapped:"))


class FakeKeyStore:
    def __init__(self) -> None:
        self.keys: list[StoredKey] = []

    def load_keys(self) -> list[StoredKey]:
        return list(self.keys)

    def ensure_active_key(self, purpose: str, make_wrapped_key: Callable[[], str]) -> StoredKey:
        for key in self.keys:
            if key.purpose == purpose and key.state == "active":
                return key
        key = StoredKey(len(self.keys) + 1, purpose, make_wrapped_key(), "active")
        self.keys.append(key)
        return key


class FakeTokenStore:
    def __init__(self) -> None:
        self.rows: dict[str, NewTokenRow] = {}

    def find_by_fingerprints(self, token_type: str, fingerprints: Sequence[bytes]) -> dict[bytes, str]:
        wanted = set(fingerprints)
        return {
            r.fingerprint: r.token for r in self.rows.values() if r.token_type == token_type and r.fingerprint in wanted
        }

    def insert_new(self, rows: Sequence[NewTokenRow]) -> dict[bytes, str]:
        result = {}
        for row in rows:
            existing = self.find_by_fingerprints(row.token_type, [row.fingerprint])
            if existing:
                result.update(existing)
            else:
                self.rows[row.token] = row
                result[row.fingerprint] = row.token
        return result

    def fetch(self, tokens: Sequence[str]) -> dict[str, StoredToken]:
        return {
            t: StoredToken(t, self.rows[t].token_type, self.rows[t].dek_id, self.rows[t].sealed)
            for t in tokens
            if t in self.rows
        }


class FakeAuditLog:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[AuditEvent] = []
        self.fail = fail

    def append(self, event: AuditEvent) -> None:
        if self.fail:
            raise OSError("audit storage unavailable")
        self.events.append(event)


class FakeQueue:
    """Records what the batch processor does to messages, in order."""

    def __init__(self, dlq_fails: bool = False) -> None:
        self.actions: list[tuple[str, str]] = []
        self.dead_lettered: list[tuple[str, str]] = []
        self.retry_delays: list[int] = []
        self.dlq_fails = dlq_fails
        self.pending: list[QueueMessage] = []

    def receive(self, max_messages: int, wait_seconds: int) -> list[QueueMessage]:
        batch, self.pending = self.pending[:max_messages], self.pending[max_messages:]
        return batch

    def delete(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        self.actions += [("delete", m.message_id) for m in messages]
        return []

    def dead_letter(self, message: QueueMessage, reason: str, detail: str) -> None:
        if self.dlq_fails:
            raise TransientError("DLQ down")
        self.actions.append(("dead_letter", message.message_id))
        self.dead_lettered.append((message.message_id, reason))

    def retry_later(self, messages: Sequence[QueueMessage], delay_seconds: int) -> None:
        self.actions += [("retry", m.message_id) for m in messages]
        self.retry_delays.append(delay_seconds)

    def depth(self) -> QueueDepth:
        return QueueDepth(len(self.pending), 0, 0)


class FakeTokenizer:
    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.calls: list[tuple[list[str], list[str]]] = []

    def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        if self.down:
            raise TransientError("vault service UNAVAILABLE")
        self.calls.append((list(ips), list(device_ids)))
        return {v: f"ip_{abs(hash(v))}" for v in ips}, {v: f"dev_{abs(hash(v))}" for v in device_ids}


class FakeLoginStore:
    def __init__(self, queue: FakeQueue | None = None, down: bool = False) -> None:
        self.rows: dict[str, UserLoginRow] = {}
        self.quarantine: dict[str, QuarantineRecord] = {}
        self.queue = queue
        self.down = down

    def write(self, rows: Sequence[UserLoginRow], quarantined: Sequence[QuarantineRecord]) -> WriteResult:
        if self.down:
            raise TransientError("Postgres unavailable")
        new_rows = [r for r in rows if r.event_id not in self.rows]
        new_q = [q for q in quarantined if q.event_id not in self.quarantine]
        self.rows.update({r.event_id: r for r in new_rows})
        self.quarantine.update({q.event_id: q for q in new_q})
        if self.queue is not None:
            self.queue.actions.append(("commit", str(len(rows))))
        return WriteResult(len(new_rows), len(new_q))
