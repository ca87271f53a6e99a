"""Two events under one event_id in the same batch are compared before the vault is called (attack 38, M4).

Neither is loaded when the batch asks `loaded_before`, so both were tokenized; the load's comparison takes no token
(migration 0021), so a second event differing only in its ip or device id was a "replay": `already_loaded`, deleted,
no letter, its values in the vault under tokens no row held. Now the batch groups its accepted events by event_id
(service/loaded_step.held_in_batch): an exact duplicate stays a duplicate, a different event is refused as
`event_id_reused` with nothing minted. Over fakes: what reaches the tokenizer, what is counted, dead-lettered,
quarantined and recorded. The integration test (tests/integration/test_etl_event_id_held_in_batch.py) counts the
vault's rows.
"""

from __future__ import annotations

import pytest

from etl_service.service.batch import BatchProcessor
from tests.unit.etl_builders import good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer
from tests.unit.test_dead_letter_minted_tokens import RecordingSealer

OTHER_IP = {"ip": "10.0.0.2"}
OTHER_DEVICE = {"device_id": "100-00-0099"}


@pytest.mark.parametrize("differs", [OTHER_IP, OTHER_DEVICE, OTHER_IP | OTHER_DEVICE], ids=["ip", "device", "both"])
def test_a_second_event_under_a_batch_mates_event_id_differing_in_ip_or_device_is_refused_before_the_vault(
    differs: dict[str, str],
) -> None:
    queue, store, tokenizer, sealer = FakeQueue(), FakeLoginStore(), FakeTokenizer(), RecordingSealer()
    processor = BatchProcessor(queue, tokenizer, store, sealer=sealer)
    first = message(1, good(1), event_id="evt-1")
    retry = message(2, {**good(1), **differs}, event_id="evt-1")  # the same login re-sent after a network change
    outcome = processor.process([first, retry])
    assert tokenizer.calls == [(["10.0.0.1"], ["100-00-0001"])]  # the first's values only
    assert (outcome.loaded, outcome.already_loaded, outcome.quarantined) == (1, 0, 1)
    assert outcome.reasons == {"event_id_reused": 1} and queue.dead_lettered == [("m2", "event_id_reused")]
    assert not recorded(sealer)  # its letter records nothing: nothing was minted for it
    record = store.quarantine["m2"]  # under its own message id, as a reuse across batches is
    assert (record.reason, record.event_id) == ("event_id_reused", "m2") and "m1" in record.detail
    assert "10.0.0" not in record.detail and "100-00" not in record.detail
    assert store.rows["evt-1"].sqs_message_id == "m1"
    assert {("delete", "m1"), ("delete", "m2")} <= set(queue.actions)


def test_exact_duplicates_in_a_batch_stay_duplicates_and_a_different_third_is_refused() -> None:
    queue, store, tokenizer, sealer = FakeQueue(), FakeLoginStore(), FakeTokenizer(), RecordingSealer()
    processor = BatchProcessor(queue, tokenizer, store, sealer=sealer)
    batch = [
        message(1, good(1), event_id="evt-1"),
        message(2, {**good(1), **OTHER_IP}, event_id="evt-1"),  # differs from the first holder
        message(3, good(1), event_id="evt-1"),  # the first again: a duplicate
        message(4, {**good(1), "user_id": "someone-else"}, event_id="evt-1"),  # a column without a token
        message(5, good(5), event_id="evt-5"),
        message(6, good(5), event_id="evt-5"),
    ]
    outcome = processor.process(batch)
    assert tokenizer.calls == [(["10.0.0.1"], ["100-00-0001", "100-00-0005"])]
    assert (outcome.loaded, outcome.already_loaded, outcome.quarantined) == (2, 2, 2)
    assert queue.dead_lettered == [("m2", "event_id_reused"), ("m4", "event_id_reused")]
    assert not recorded(sealer)
    assert all(("delete", f"m{i}") in queue.actions for i in range(1, 7))


def test_a_batch_mate_refused_on_its_last_receive_keeps_its_reason_when_the_vault_is_down() -> None:
    queue, store = FakeQueue(), FakeLoginStore()
    processor = BatchProcessor(
        queue, FakeTokenizer(down=True), store, max_receive_count=3, sealer=RecordingSealer(), tokenize_retry_seconds=0
    )
    outcome = processor.process(
        [message(1, good(1), receive_count=3, event_id="evt-1"), message(2, good(1, ip="10.0.0.2"), 3, "evt-1")]
    )
    assert queue.dead_lettered == [("m2", "event_id_reused"), ("m1", "dependency_unavailable")]
    assert outcome.reasons == {"event_id_reused": 1, "dependency_unavailable": 1} and not store.rows


def recorded(sealer: RecordingSealer) -> list[str]:
    """The tokens the batch's letters record (none when the vault minted nothing for them)."""
    return [token for call in sealer.minted for tokens in call or () for token in tokens]


def test_a_batch_mate_spelling_the_same_ip_otherwise_is_a_duplicate_not_another_event() -> None:
    """Review 38, R38-7: `::ffff:10.0.0.1` is 10.0.0.1 to the vault (one token): the retry was quarantined."""
    queue, store, tokenizer, sealer = FakeQueue(), FakeLoginStore(), FakeTokenizer(), RecordingSealer()
    processor = BatchProcessor(queue, tokenizer, store, sealer=sealer)
    batch = [message(1, good(1), event_id="evt-1"), message(2, {**good(1), "ip": "::ffff:10.0.0.1"}, event_id="evt-1")]
    outcome = processor.process(batch)
    assert (outcome.loaded, outcome.already_loaded, outcome.quarantined) == (1, 1, 0) and queue.dead_lettered == []


@pytest.mark.parametrize(
    ("first", "retry"),
    [
        ({"ip": "2001:db8::a1"}, {"ip": "2001:DB8::A1"}),
        ({"ip": "2001:db8::a1"}, {"ip": "2001:0db8:0000::00a1"}),
        ({"device_id": "100-00-0001"}, {"device_id": " 100-00-0001 ", "ip": " 10.0.0.1"}),
    ],
    ids=["ipv6-upper-case", "ipv6-expanded", "device-and-ip-padded"],
)
def test_a_batch_mate_spelling_the_same_values_as_the_vault_reads_them_is_a_duplicate(
    first: dict[str, str], retry: dict[str, str]
) -> None:
    """Attack 39, P3: `2001:DB8::A1` is `2001:db8::a1`'s token (normalize_ip, as the vault): a duplicate, no letter."""
    queue, store, tokenizer, sealer = FakeQueue(), FakeLoginStore(), FakeTokenizer(), RecordingSealer()
    processor = BatchProcessor(queue, tokenizer, store, sealer=sealer)
    batch = [message(1, good(1) | first, event_id="evt-1"), message(2, good(1) | first | retry, event_id="evt-1")]
    outcome = processor.process(batch)
    assert (outcome.loaded, outcome.already_loaded, outcome.quarantined) == (1, 1, 0) and queue.dead_lettered == []
