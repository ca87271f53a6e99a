"""A message released on its last receive is dead-lettered sealed, not left to SQS's redrive (review 20, R20-10).

Released (visibility 0: a misconfiguration, a stop, the shutdown grace over) after its last receive
was counted, a message is moved to the DLQ by SQS's next receive with its body in clear and no reason.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

from etl_service.domain.messages import QuarantineRecord, UserLoginRow
from etl_service.errors import Misconfigured
from etl_service.service.batch import BatchProcessor
from etl_service.service.ports import WriteResult
from tests.unit.etl_builders import RecordingSealer, consumer, good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer
from tests.unit.test_batch import EnvelopeSealer
from tests.unit.test_consumer_lifecycle import HungTokenizer


class RevokedStore(FakeLoginStore):
    """The database owner revoked the ETL's INSERT: a misconfiguration."""

    def write(
        self, rows: Sequence[UserLoginRow], quarantined: Sequence[QuarantineRecord], manifest: object = None
    ) -> WriteResult:
        raise Misconfigured("Postgres refused the ETL: permission denied for table user_logins", "database")


def test_a_misconfiguration_dead_letters_sealed_what_is_on_its_last_receive_and_releases_the_rest() -> None:
    queue = FakeQueue()
    processor = BatchProcessor(queue, FakeTokenizer(), RevokedStore(), max_receive_count=3, sealer=EnvelopeSealer())
    last = message(1, good(1), receive_count=3, event_id="100-00-0001")  # its own device id as its id
    outcome = processor.process([last, message(2, good(2), receive_count=2)])
    assert outcome.fatal is not None
    assert queue.dead_lettered == [("m1", "released_on_last_receive")] and queue.dead_letter_event_ids == [None]
    assert [json.loads(b)["sealed_body"] for b in queue.dead_letter_bodies] == ["vault:v1:x"]
    assert "a misconfiguration of database" in queue.dead_letter_details[0]
    assert ("delete", "m1") in queue.actions and ("release", "m1") not in queue.actions
    assert ("release", "m2") in queue.actions and outcome.released == 1
    assert outcome.reasons == {"released_on_last_receive": 1}


def test_with_openbao_or_the_dlq_down_too_a_last_receive_is_released_as_before() -> None:
    sealer = RecordingSealer()
    sealer.down = True
    for queue, seal in ((FakeQueue(), sealer), (FakeQueue(dlq_fails=True), EnvelopeSealer())):
        processor = BatchProcessor(queue, FakeTokenizer(), RevokedStore(), max_receive_count=3, sealer=seal)
        outcome = processor.process([message(1, good(1), receive_count=3)])
        assert queue.actions == [("release", "m1")] and outcome.released == 1 and not outcome.reasons


def test_at_a_stop_a_held_message_on_its_last_receive_is_dead_lettered_not_released() -> None:
    queue, tokenizer = FakeQueue(), HungTokenizer()
    queue.pending = [message(i, good(i), receive_count=3) for i in range(3)]
    c = consumer(queue, tokenizer, FakeLoginStore(), max_receive_count=3, batch_size=10, shutdown_grace_seconds=0.3)
    threading.Timer(0.2, c.stop).start()
    try:
        summary = c.run()
    finally:
        tokenizer.release.set()
    assert sorted(queue.dead_lettered) == [(f"m{i}", "released_on_last_receive") for i in range(3)]
    assert not [a for a in queue.actions if a[0] == "release"] and c.held == 0
    assert summary.released_at_stop == 0 and summary.unprocessed_after_errors == 3
