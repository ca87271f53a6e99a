"""Events user_logins holds are set aside before the vault sees them (attack 34, E1; service/loaded_step.py).

The integration tests (tests/integration/test_etl_replay_reaches_no_vault.py) count the vault's rows;
these check the batch's bookkeeping over fakes: what reaches the tokenizer, what is counted, deleted,
quarantined and under which key.
"""

from __future__ import annotations

from collections.abc import Sequence

from etl_service.domain.messages import EventKey
from etl_service.service.batch import BatchProcessor
from etl_service.service.ports import LoadedBefore
from tests.unit.etl_builders import good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer
from tests.unit.test_batch import EnvelopeSealer


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


class DownAfterTheRead(FakeLoginStore):
    """Postgres answers a batch's read of loaded events, then, once `failing`, is down (the vault's too: one host)."""

    failing = False

    def loaded_before(self, events: Sequence[EventKey]) -> LoadedBefore:
        found = super().loaded_before(events)
        self.down = self.failing
        return found


def test_a_replay_on_its_last_receive_is_deleted_and_counted_whatever_fails_after_the_read() -> None:
    """Review 37, R37-6: a replay set aside in step 2 is in neither the accepted nor the refused messages, so on its
    last receive, with the vault down, it was deleted uncounted - and with Postgres down too it was left to SQS's
    redrive, which moves it to the DLQ in clear (attack 19, finding 2). Before step 2 it was dead-lettered sealed."""
    for postgres_fails in (False, True):
        queue, store = FakeQueue(), DownAfterTheRead()
        BatchProcessor(queue, FakeTokenizer(), store).process([message(1, good(1), event_id="evt-1")])
        queue.actions.clear()
        store.failing = postgres_fails
        processor = BatchProcessor(
            queue,
            FakeTokenizer(down=True),
            store,
            max_receive_count=3,
            sealer=EnvelopeSealer(),
            tokenize_retry_seconds=0,
        )
        replay, new = message(1, good(1), receive_count=3, event_id="evt-1"), message(2, good(2), receive_count=3)
        outcome = processor.process([replay, new])
        assert ("delete", "m1") in queue.actions, (postgres_fails, queue.actions)
        assert outcome.already_loaded == 1 and queue.dead_lettered == [("m2", "dependency_unavailable")], postgres_fails
