"""What the ETL's unit tests build over fakes: queue messages, event bodies, a consumer, a sealer, settings.

Shared by the batch, consumer, drain, returned-letter and event-id tests. Made-up values only:
private-range addresses and device ids of a test shape.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from etl_service.domain.messages import QueueMessage
from etl_service.errors import DependencyDown
from etl_service.service.batch import BatchProcessor
from etl_service.service.consumer import Consumer, ConsumerSettings, ledger_for
from etl_service.service.gate import DependencyGate
from etl_service.service.outcomes import ConsumerObserver, NoObserver
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer

SENT_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
"""The SentTimestamp of every message built here."""


def message(i: int, body: object, receive_count: int = 1, event_id: str | None = None) -> QueueMessage:
    """Message `m{i}` (receipt `r{i}`) carrying `body`, as it is if a string, else as JSON."""
    text = body if isinstance(body, str) else json.dumps(body)
    return QueueMessage(f"m{i}", f"r{i}", text, SENT_MS, receive_count, event_id)


def good(i: int, ip: str = "10.0.0.1") -> dict[str, object]:
    """A valid login event of user `u{i}`."""
    return {
        "user_id": f"u{i}",
        "app_version": "2.0",
        "device_type": "ios",
        "ip": ip,
        "locale": None,
        "device_id": f"100-00-{i:04d}",
    }


def messages(count: int, bad_every: int = 0) -> list[QueueMessage]:
    """`count` messages of valid events (97 devices), every `bad_every`-th one not JSON (none if 0)."""
    result = []
    for i in range(count):
        body = {"user_id": f"u{i}", "app_version": "1.2", "device_type": "ios", "ip": f"10.0.{i % 250}.1"}
        body |= {"locale": "US", "device_id": f"d-{i % 97}"}
        text = "not json" if bad_every and i % bad_every == 0 else json.dumps(body)
        result.append(QueueMessage(f"m{i}", f"r{i}", text, SENT_MS, 1))
    return result


def consumer(
    queue: FakeQueue,
    tokenizer: FakeTokenizer,
    store: FakeLoginStore,
    observer: ConsumerObserver | None = None,
    gate: DependencyGate | None = None,
    max_receive_count: int | None = None,
    **settings: float,
) -> Consumer:
    """A consumer wired as bootstrap wires it, over fakes."""
    processor = BatchProcessor(queue, tokenizer, store, max_receive_count=max_receive_count)

    def probe() -> None:
        tokenizer.ready()
        store.ready()

    gate = gate or DependencyGate(probe, first_pause=0.05, max_pause=0.2)
    config = ConsumerSettings(**settings)  # type: ignore[arg-type]
    return Consumer(queue, processor, config, gate, ledger_for(config), observer or NoObserver())


class RecordingSealer:
    """A dead-letter sealer that records the bodies it seals; `down` plays OpenBao unavailable."""

    key_name: str | None = "test-key"

    def __init__(self) -> None:
        self.sealed: list[str] = []
        self.down = False
        self.genuine: set[str] = set()
        """The ciphertexts Transit would authenticate under the dead-letter key."""
        self.asked: list[list[str]] = []

    def seal(self, bodies: Sequence[str], minted: Sequence[Sequence[str]] | None = None) -> list[str]:
        """One envelope per body, each with the same made-up ciphertext."""
        if self.down:
            raise DependencyDown("OpenBao unavailable", "openbao")
        self.sealed += bodies
        return [json.dumps({"format": "tokenvault-dead-letter/1", "sealed_body": "vault:v1:x"}) for _ in bodies]

    def authentic(self, ciphertexts: Sequence[str]) -> frozenset[str]:
        """The ciphertexts among `ciphertexts` that are in `genuine`."""
        if self.down:
            raise DependencyDown("OpenBao unavailable", "openbao")
        self.asked.append(list(ciphertexts))
        return frozenset(c for c in ciphertexts if c in self.genuine)


def minimal_etl_env(tmp_path: Path, queue_url: str) -> dict[str, str]:
    """The fewest settings EtlConfig.from_env takes: `queue_url`, placeholder TLS files, bodies discarded."""
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    return {
        "ETL_QUEUE_URL": queue_url,
        "ETL_DATABASE_DSN": "postgresql://etl@db/app?require_auth=scram-sha-256",
        "ETL_VAULT_ADDRESS": "vault:50051",
        **{f"ETL_TLS_{name}": str(pem) for name in ("CA", "CERT", "KEY")},
        "ETL_DLQ_BODIES": "discard",
    }
