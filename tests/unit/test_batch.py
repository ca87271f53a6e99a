"""Batch processing over fakes: order of commit/DLQ/delete, outages, duplicates."""

import json

from hypothesis import given
from hypothesis import strategies as st

from etl_service.adapters.vault_client import chunked_columns
from etl_service.domain.messages import QueueMessage
from etl_service.service.batch import BatchProcessor, retry_delay
from etl_service.service.consumer import Consumer, ConsumerSettings
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer

SENT_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def message(i: int, body: object, receive_count: int = 1, event_id: str | None = None) -> QueueMessage:
    text = body if isinstance(body, str) else json.dumps(body)
    return QueueMessage(f"m{i}", f"r{i}", text, SENT_MS, receive_count, event_id)


def good(i: int, ip: str = "10.0.0.1") -> dict[str, object]:
    return {
        "user_id": f"u{i}",
        "app_version": "2.0",
        "device_type": "ios",
        "ip": ip,
        "locale": None,
        "device_id": f"100-00-{i:04d}",
    }


def test_good_and_bad_messages_of_one_batch_each_reach_their_place() -> None:
    queue = FakeQueue()
    store = FakeLoginStore(queue)
    outcome = BatchProcessor(queue, FakeTokenizer(), store).process(
        [message(1, good(1)), message(2, "garbage"), message(3, good(3))]
    )
    assert (outcome.loaded, outcome.quarantined) == (2, 1)
    assert queue.dead_lettered == [("m2", "not_json")]
    assert store.quarantine["m2"].reason == "not_json"
    # Commit first, then DLQ, then delete: a crash in between leaves messages to redeliver.
    assert [a for a, _ in queue.actions] == ["commit", "dead_letter", "delete", "delete", "delete"]


def test_rows_carry_tokens_the_sent_date_and_the_exact_version() -> None:
    queue = FakeQueue()
    store = FakeLoginStore(queue)
    BatchProcessor(queue, FakeTokenizer(), store).process([message(1, good(1))])
    row = store.rows["m1"]
    assert row.masked_ip.startswith("ip_") and row.masked_device_id.startswith("dev_")
    assert str(row.create_date) == "2023-11-14"
    assert (row.app_version, row.app_version_text) == (2_000_000, "2.0")


def test_values_are_deduplicated_before_the_single_vault_call() -> None:
    tokenizer = FakeTokenizer()
    queue = FakeQueue()
    BatchProcessor(queue, tokenizer, FakeLoginStore()).process([message(i, good(i, ip="10.0.0.9")) for i in range(5)])
    assert len(tokenizer.calls) == 1
    assert tokenizer.calls[0][0] == ["10.0.0.9"]


def test_vault_outage_deletes_nothing_and_backs_off() -> None:
    queue = FakeQueue()
    store = FakeLoginStore()
    outcome = BatchProcessor(queue, FakeTokenizer(down=True), store).process(
        [message(1, good(1), receive_count=3), message(2, "garbage")]
    )
    assert outcome.retried == 2 and not store.rows and not store.quarantine
    assert all(action == "retry" for action, _ in queue.actions)
    assert queue.retry_delays == [8]


def test_database_outage_deletes_nothing() -> None:
    queue = FakeQueue()
    BatchProcessor(queue, FakeTokenizer(), FakeLoginStore(down=True)).process([message(1, good(1))])
    assert [a for a, _ in queue.actions] == ["retry"]


def test_dlq_outage_keeps_the_bad_message_in_the_source_queue() -> None:
    queue = FakeQueue(dlq_fails=True)
    outcome = BatchProcessor(queue, FakeTokenizer(), FakeLoginStore()).process(
        [message(1, good(1)), message(2, "garbage")]
    )
    assert ("delete", "m2") not in queue.actions and ("delete", "m1") in queue.actions
    assert outcome.retried == 1


def test_redelivered_message_adds_no_row() -> None:
    queue = FakeQueue()
    store = FakeLoginStore()
    processor = BatchProcessor(queue, FakeTokenizer(), store)
    processor.process([message(1, good(1), event_id="evt-1")])
    outcome = processor.process([message(9, good(1), receive_count=2, event_id="evt-1")])
    assert len(store.rows) == 1 and outcome.already_loaded == 1


def test_retry_delay_grows_and_is_capped() -> None:
    assert [retry_delay(n) for n in (1, 2, 3)] == [2, 4, 8]
    assert retry_delay(50) == 900


def test_drain_stops_when_the_queue_is_empty_and_counts_everything() -> None:
    queue = FakeQueue()
    queue.pending = [message(i, good(i)) for i in range(25)] + [message(99, "[]")]
    store = FakeLoginStore()
    consumer = Consumer(queue, BatchProcessor(queue, FakeTokenizer(), store), ConsumerSettings(batch_size=10))
    summary = consumer.drain()
    assert (summary.received, summary.loaded, summary.quarantined) == (26, 25, 1)
    assert summary.reasons == {"not_an_object": 1}


@given(
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=1, max_value=15),
)
def test_value_columns_are_cut_into_calls_within_the_limit_losing_nothing(ips: int, devices: int, limit: int) -> None:
    ip_values = [f"ip{i}" for i in range(ips)]
    device_values = [f"dev{i}" for i in range(devices)]
    pieces = list(chunked_columns(ip_values, device_values, limit))
    assert all(len(a) + len(b) <= limit for a, b in pieces)
    assert [v for a, _ in pieces for v in a] == ip_values
    assert [v for _, b in pieces for v in b] == device_values
    assert len(pieces) == max(1, -(-(ips + devices) // limit))
