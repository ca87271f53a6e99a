"""Events user_logins holds are set aside before the vault sees them (attack 34, E1; service/loaded_step.py).

The integration tests (tests/integration/test_etl_replay_reaches_no_vault.py) count the vault's rows;
these check the batch's bookkeeping over fakes: what reaches the tokenizer, what is counted, deleted,
quarantined and under which key.
"""

from __future__ import annotations

from etl_service.service.batch import BatchProcessor
from tests.unit.etl_builders import good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer


def test_a_replay_and_a_reused_event_id_reach_no_tokenizer_and_the_rest_of_the_batch_loads() -> None:
    queue, store, tokenizer = FakeQueue(), FakeLoginStore(), FakeTokenizer()
    processor = BatchProcessor(queue, tokenizer, store)
    processor.process([message(1, good(1, ip="10.0.0.1"), event_id="evt-1")])
    tokenizer.calls.clear()
    replay = message(1, good(1, ip="10.0.0.1"), receive_count=2, event_id="evt-1")
    reused = message(2, good(2, ip="10.0.0.2"), event_id="evt-1")  # another user under a loaded event_id
    new = message(3, good(3, ip="10.0.0.3"), event_id="evt-3")
    outcome = processor.process([replay, reused, new])
    assert tokenizer.calls == [(["10.0.0.3"], ["100-00-0003"])]  # the new event's values only
    assert (outcome.loaded, outcome.already_loaded, outcome.quarantined) == (1, 1, 1)
    assert outcome.reasons == {"event_id_reused": 1} and queue.dead_lettered == [("m2", "event_id_reused")]
    record = store.quarantine["m2"]  # under its own message id: the event id names the loaded event
    assert (record.reason, record.sqs_message_id) == ("event_id_reused", "m2") and "m1" in record.detail
    assert {("delete", m) for m in ("m1", "m2", "m3")} <= set(queue.actions)


def test_a_batch_of_replays_only_makes_no_vault_call() -> None:
    queue, store, tokenizer = FakeQueue(), FakeLoginStore(), FakeTokenizer()
    processor = BatchProcessor(queue, tokenizer, store)
    processor.process([message(1, good(1), event_id="evt-1"), message(2, good(2))])
    tokenizer.calls.clear()
    outcome = processor.process([message(1, good(1), receive_count=2, event_id="evt-1"), message(2, good(2))])
    assert tokenizer.calls == [] and (outcome.loaded, outcome.already_loaded, outcome.quarantined) == (0, 2, 0)
