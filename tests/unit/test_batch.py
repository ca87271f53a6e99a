"""Batch processing over fakes: order of commit/DLQ/delete, outages, duplicates."""

import json
import uuid
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl_service.domain.messages import QuarantineRecord, UserLoginRow, check_event_id
from etl_service.domain.redelivery import retry_delay
from etl_service.errors import DependencyDown, Misconfigured, Throttled, VaultCallFailed, vault_status_error
from etl_service.service.batch import BatchProcessor
from etl_service.service.ports import WriteResult
from tests.unit.etl_builders import RecordingSealer, consumer, good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer
from tokenvault_client.chunking import ChunkLimits, column_chunks


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
    assert outcome.errored == {"m1", "m2"}  # left unprocessed by an error until a later batch settles them


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
    assert outcome.retried == 1 and outcome.errored == {"m2"}


def test_redelivered_message_adds_no_row() -> None:
    queue = FakeQueue()
    store = FakeLoginStore()
    processor = BatchProcessor(queue, FakeTokenizer(), store)
    processor.process([message(1, good(1), event_id="evt-1")])
    outcome = processor.process([message(9, good(1), receive_count=2, event_id="evt-1")])
    assert len(store.rows) == 1 and outcome.already_loaded == 1


def test_a_different_event_under_a_loaded_event_id_is_quarantined_not_counted_as_a_duplicate() -> None:
    queue, store, sealer = FakeQueue(), FakeLoginStore(), RecordingSealer()
    processor = BatchProcessor(queue, FakeTokenizer(), store, sealer=sealer)
    processor.process([message(1, good(1), event_id="evt-1")])
    genuine = message(2, {**good(2), "ip": "10.0.0.2"}, event_id="evt-1")
    outcome = processor.process([genuine, message(3, good(3), event_id="evt-3")])
    assert (outcome.loaded, outcome.already_loaded, outcome.quarantined) == (1, 0, 1)
    assert outcome.reasons == {"event_id_reused": 1}
    assert queue.dead_lettered == [("m2", "event_id_reused")]
    assert sealer.sealed == [genuine.body]  # sealed like any refused body
    assert json.loads(queue.dead_letter_bodies[0])["sealed_body"] == "vault:v1:x"
    record = store.quarantine["m2"]  # under its own message id: the event id names the loaded event
    assert (record.reason, record.sqs_message_id) == ("event_id_reused", "m2") and "m1" in record.detail
    assert store.rows["evt-1"].user_id == "u1"
    assert ("delete", "m2") in queue.actions


def test_a_reused_id_whose_body_cannot_be_sealed_yet_is_redelivered_then_dead_lettered() -> None:
    queue, store, sealer = FakeQueue(), FakeLoginStore(), RecordingSealer()
    processor = BatchProcessor(queue, FakeTokenizer(), store, sealer=sealer)
    processor.process([message(1, good(1), event_id="evt-1")])
    sealer.down = True
    outcome = processor.process([message(2, good(2), event_id="evt-1")])
    assert outcome.failed_dependency == "openbao" and outcome.errored == {"m2"}
    assert ("delete", "m2") not in queue.actions and not queue.dead_lettered
    # Found before tokenizing (attack 34, E1): refused as any other message, its row written with its sealed letter.
    assert "m2" not in store.quarantine
    sealer.down = False
    again = processor.process([message(2, good(2), receive_count=2, event_id="evt-1")])
    assert (again.quarantined, again.already_loaded) == (1, 0)
    assert queue.dead_lettered == [("m2", "event_id_reused")] and ("delete", "m2") in queue.actions


def test_a_replay_differing_only_in_its_message_id_stays_a_duplicate() -> None:
    queue, store = FakeQueue(), FakeLoginStore()
    processor = BatchProcessor(queue, FakeTokenizer(), store)
    processor.process([message(1, good(1), event_id="evt-1")])
    outcome = processor.process([message(7, good(1), event_id="evt-1")])  # a dead letter taken back
    assert (outcome.loaded, outcome.already_loaded, outcome.quarantined) == (0, 1, 0)
    assert not queue.dead_lettered and not store.quarantine


def test_retry_delay_grows_and_is_capped() -> None:
    assert [retry_delay(n) for n in (1, 2, 3)] == [2, 4, 8]
    assert retry_delay(50) == 900


def test_drain_stops_when_the_queue_is_empty_and_counts_everything() -> None:
    queue = FakeQueue()
    queue.pending = [message(i, good(i)) for i in range(25)] + [message(99, "[]")]
    store = FakeLoginStore()
    summary = consumer(queue, FakeTokenizer(), store, batch_size=10).drain()
    assert (summary.received, summary.loaded, summary.quarantined) == (26, 25, 1)
    assert summary.reasons == {"not_an_object": 1} and summary.unprocessed_after_errors == 0


def test_a_drain_counts_what_an_error_kept_from_loading() -> None:
    queue = FakeQueue()
    queue.pending = [message(i, good(i), receive_count=3) for i in range(5)]
    summary = consumer(queue, FakeTokenizer(), PoisonStore("u2"), batch_size=5, max_receive_count=3).drain()
    assert (summary.loaded, summary.reasons, summary.errored) == (4, {"processing_failed": 1}, set())
    assert summary.unprocessed_after_errors == 1  # the CLI exits 3 for it


@given(
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=1, max_value=15),
)
def test_value_columns_are_cut_into_calls_within_the_limit_losing_nothing(ips: int, devices: int, limit: int) -> None:
    # The ETL sends both columns through the vault client, which cuts them like this.
    ip_values = [f"ip{i}" for i in range(ips)]
    device_values = [f"dev{i}" for i in range(devices)]
    calls = list(column_chunks([ip_values, device_values], ChunkLimits(max_items=limit)))
    assert all(sum(end - start for _, start, end in call) <= limit for call in calls)
    assert [v for call in calls for i, s, e in call if i == 0 for v in ip_values[s:e]] == ip_values
    assert [v for call in calls for i, s, e in call if i == 1 for v in device_values[s:e]] == device_values
    assert len(calls) == -(-(ips + devices) // limit)


class PoisonStore(FakeLoginStore):
    """Fails every write holding the row of one user: a bug that message triggers."""

    def __init__(self, user_id: str) -> None:
        super().__init__()
        self._poison = user_id

    def write(
        self, rows: Sequence[UserLoginRow], quarantined: Sequence[QuarantineRecord], manifest: object = None
    ) -> WriteResult:
        if any(row.user_id == self._poison for row in rows):
            raise KeyError("a bug this message triggers")
        return super().write(rows, quarantined)


def test_a_message_failing_on_its_last_receive_is_quarantined_by_the_etl_with_the_error_class() -> None:
    queue, store = FakeQueue(), PoisonStore("u1")
    processor = BatchProcessor(queue, FakeTokenizer(), store, max_receive_count=3)
    early = processor.process([message(1, good(1), receive_count=2)])
    assert (early.retried, early.quarantined, early.errored) == (1, 0, {"m1"})
    last = processor.process([message(1, good(1), receive_count=3)])
    assert (last.retried, last.quarantined, last.reasons) == (0, 1, {"processing_failed": 1})
    assert not last.errored  # settled: in the DLQ with its reason
    assert queue.dead_lettered == [("m1", "processing_failed")]
    assert store.quarantine["m1"].detail.endswith("KeyError")
    assert ("delete", "m1") in queue.actions


def test_a_refused_identity_releases_the_batch_and_reports_it_fatal() -> None:
    queue = FakeQueue()
    processor = BatchProcessor(queue, RefusingTokenizer(), FakeLoginStore())
    outcome = processor.process([message(i, good(i)) for i in range(5)])
    assert isinstance(outcome.fatal, Misconfigured)
    assert [a for a, _ in queue.actions] == ["release"] * 5
    assert (outcome.released, outcome.retried, queue.dead_lettered) == (5, 0, [])


class RefusingTokenizer(FakeTokenizer):
    def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        raise vault_status_error("PERMISSION_DENIED", "client 'analyst' may not tokenize", "Tokenize")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("UNAVAILABLE", DependencyDown),
        ("DEADLINE_EXCEEDED", DependencyDown),
        ("RESOURCE_EXHAUSTED", Throttled),
        ("PERMISSION_DENIED", Misconfigured),
        ("UNAUTHENTICATED", Misconfigured),
        ("UNIMPLEMENTED", Misconfigured),
        ("INVALID_ARGUMENT", VaultCallFailed),
        ("INTERNAL", VaultCallFailed),
    ],
)
def test_vault_status_codes_are_told_apart_by_kind(code: str, kind: type[Exception]) -> None:
    assert type(vault_status_error(code, "detail", "Tokenize")) is kind


def test_the_dlq_keeps_no_body_in_clear_and_none_over_the_size_limit() -> None:
    queue = FakeQueue()
    missing = {k: v for k, v in good(1).items() if k != "user_id"}
    large = {**good(2), "padding": "x" * 20_000}
    BatchProcessor(queue, FakeTokenizer(), FakeLoginStore()).process([message(1, missing), message(2, large)])
    assert [r for _, r in queue.dead_lettered] == ["missing_field", "body_too_large"]
    envelopes = [json.loads(b) for b in queue.dead_letter_bodies]
    assert all(e["sealed_body"] is None for e in envelopes)
    assert envelopes[1]["note"] == "body not kept: over the size limit"
    assert not [b for b in queue.dead_letter_bodies if "10.0.0.1" in b or "100-00-0001" in b]


def test_an_invalid_event_id_attribute_is_quarantined_under_the_message_id() -> None:
    queue, store = FakeQueue(), FakeLoginStore()
    event_id, problem = check_event_id("e" * 129)
    bad = replace(message(1, good(1)), event_id=event_id, event_id_problem=problem)
    outcome = BatchProcessor(queue, FakeTokenizer(), store).process([bad, message(2, good(2))])
    assert (outcome.loaded, outcome.reasons) == (1, {"invalid_event_id": 1})
    assert "m1" in store.quarantine and "128" in store.quarantine["m1"].detail


@pytest.mark.parametrize("raw", ["", None, "evt-1", "e" * 128])
def test_usable_event_ids(raw: str | None) -> None:
    assert check_event_id(raw)[1] is None


@pytest.mark.parametrize("raw", ["e" * 129, " evt", "evt\n", "ev\x00t"])
def test_refused_event_ids(raw: str) -> None:
    assert check_event_id(raw) == (None, check_event_id(raw)[1]) and check_event_id(raw)[1]


@pytest.mark.parametrize(
    "raw",
    [
        str(uuid.UUID(int=0x123E4567E89B12D3A456426614174000)),
        "4ba2b6b0-2c37-4c35-b1a3-0a9d3d1f6e2b",
        "4BA2B6B02C374C35B1A30A9D3D1F6E2B",
        "01HF7YQ2ZK8X3N5V6W7T9R0ABC",  # a ULID
        "gen-4123456789-300-0000012",
        "order-evt-000042",
        "evt-20261203-000042",
        "2026-12-03T12:00:00Z-17",
        "app-1.2.3",
        "1701600000000-7",
    ],
)
def test_opaque_event_ids_of_common_shapes_are_usable(raw: str) -> None:
    assert check_event_id(raw) == (raw, None)


@given(st.uuids())
def test_no_uuid_reads_as_an_address(value: uuid.UUID) -> None:
    for spelled in (str(value), value.hex, str(value).upper()):
        assert check_event_id(spelled)[1] is None


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("login-203.0.113.201-1", "IP address"),
        ("login-203-0-113-201-1", "IP address"),
        ("evt_198.51.100.7", "IP address"),
        ("192.000.002.010-x", "IP address"),
        ("\uff11\uff19\uff12\uff0e\uff10\uff0e\uff12\uff0e\uff11", "IP address"),  # fullwidth 192.0.2.1
        ("evt-2001:db8::7", "IP address"),
        ("evt-2001-db8--7", "IP address"),
        ("user@example.org-1", "e-mail address"),
        ("user [at] example [dot] org", "e-mail address"),
        ("dev-00:00:5e:00:53:01", "hardware address"),
        ("dev-00-00-5E-00-53-01", "hardware address"),
        ("dev-0000.5e00.5301", "hardware address"),
    ],
)
def test_event_ids_carrying_an_address_are_refused_without_quoting_it(raw: str, kind: str) -> None:
    event_id, problem = check_event_id(raw)
    assert event_id is None and problem is not None and kind in problem
    assert raw not in problem and "203" not in problem


def test_an_event_id_carrying_an_ip_is_quarantined_under_the_message_id_and_stored_nowhere() -> None:
    queue, store = FakeQueue(), FakeLoginStore()
    event_id, problem = check_event_id("login-203.0.113.201-1")
    bad = replace(message(1, good(1)), event_id=event_id, event_id_problem=problem)
    outcome = BatchProcessor(queue, FakeTokenizer(), store).process([bad])
    assert (outcome.loaded, outcome.reasons) == (0, {"invalid_event_id": 1})
    assert store.quarantine["m1"].event_id == "m1"
    assert "203.0.113.201" not in repr(store.quarantine) + repr(store.rows) + repr(queue.dead_letter_bodies)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [("device_type", "ipados", "unknown_device_type"), ("locale", "en_US.UTF-8", "invalid_locale"),
     ("app_version", "2.0-beta", "invalid_app_version"), ("locale", None, "missing_field")],
)  # fmt: skip
def test_an_event_refused_for_another_field_drops_an_event_id_carrying_its_own_device_id(
    field: str, value: str | None, reason: str
) -> None:
    # Attack 19, finding 5: compared only when the whole event validated, such an id was kept in clear.
    queue, store = FakeQueue(), FakeLoginStore()
    event = {**good(1), "device_id": "6D92078A-8246-4BA4-AE5B-76104861E7DC", field: value}
    if value is None:
        del event[field]
    refused = message(1, event, event_id="6D92078A-8246-4BA4-AE5B-76104861E7DC:1")
    outcome = BatchProcessor(queue, FakeTokenizer(), store).process([refused, message(2, event, event_id="evt-2")])
    assert outcome.reasons == {reason: 2}
    assert (store.quarantine["m1"].event_id, store.quarantine["evt-2"].event_id) == ("m1", "evt-2")
    assert "6d92078a" not in repr(store.quarantine).lower()


class BrokenStore(FakeLoginStore):
    """Fails every write: a bug (or data the table refuses) that even the quarantine row meets."""

    def write(
        self, rows: Sequence[UserLoginRow], quarantined: Sequence[QuarantineRecord], manifest: object = None
    ) -> WriteResult:
        raise ValueError("a bug every write of this message triggers")


class EnvelopeSealer:
    key_name: str | None = "tokenvault-dead-letters"

    def seal(self, bodies: Sequence[str], minted: Sequence[Sequence[str]] | None = None) -> list[str]:
        return [json.dumps({"format": "tokenvault-dead-letter/1", "sealed_body": "vault:v1:x", "key": self.key_name})
                for _ in bodies]  # fmt: skip

    def authentic(self, ciphertexts: Sequence[str]) -> frozenset[str]:
        return frozenset()


def test_a_failing_message_whose_quarantine_row_cannot_be_written_is_still_sealed_and_dead_lettered() -> None:
    queue = FakeQueue()
    processor = BatchProcessor(queue, FakeTokenizer(), BrokenStore(), max_receive_count=3, sealer=EnvelopeSealer())
    outcome = processor.process([message(1, good(1), receive_count=3)])
    assert queue.dead_lettered == [("m1", "processing_failed")]
    assert [json.loads(b)["sealed_body"] for b in queue.dead_letter_bodies] == ["vault:v1:x"]
    assert not [b for b in queue.dead_letter_bodies if "10.0.0.1" in b]
    assert ("delete", "m1") in queue.actions
    assert (outcome.quarantined, outcome.retried, outcome.errored) == (1, 0, set())
    # With the DLQ down too it stays in the source queue (deleted only once dead-lettered).
    queue = FakeQueue(dlq_fails=True)
    processor = BatchProcessor(queue, FakeTokenizer(), BrokenStore(), max_receive_count=3, sealer=EnvelopeSealer())
    outcome = processor.process([message(1, good(1), receive_count=3)])
    assert queue.dead_lettered == [] and ("delete", "m1") not in queue.actions
    assert outcome.errored == {"m1"}
