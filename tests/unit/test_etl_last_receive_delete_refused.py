"""A delete SQS refuses while a last receive is dead-lettered sends each letter once and stops the ETL (R49-3).

C49-7 made the delete's refusal a Misconfigured; raised after the letters were sent, inside
`_dead_letter_unavailable` or `_last_resort` it was taken for a failed quarantine: every letter was sent a second
time (`_dead_letter_only`) and the refusal was swallowed there, so the ETL never stopped for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from etl_service.adapters.sqs_common import QueueConfigurationError
from etl_service.domain.messages import QueueMessage
from etl_service.service.batch import BatchProcessor
from tests.unit.etl_builders import good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer
from tests.unit.test_batch import EnvelopeSealer


class DeleteRefused(FakeQueue):
    """A queue whose identity may not delete (sqs:DeleteMessage missing)."""

    def delete(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        raise QueueConfigurationError("SQS refused DeleteMessage: AccessDenied")


def _processor(queue: FakeQueue, tokenizer: FakeTokenizer) -> BatchProcessor:
    return BatchProcessor(
        queue, tokenizer, FakeLoginStore(), max_receive_count=3, sealer=EnvelopeSealer(), tokenize_retry_seconds=0
    )


def test_a_last_receive_the_vault_kept_from_loading_is_dead_lettered_once_and_the_refused_delete_stops_the_etl() -> (
    None
):
    queue = DeleteRefused()
    outcome = _processor(queue, FakeTokenizer(down=True)).process([message(1, good(1), receive_count=3)])
    assert queue.dead_lettered == [("m1", "dependency_unavailable")]
    assert isinstance(outcome.fatal, QueueConfigurationError)
    assert outcome.delete_failures == 1


class BuggyTokenizer(FakeTokenizer):
    """A tokenizer failing for a bug (not a dependency): the message goes to `_last_resort`."""

    def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        raise RuntimeError("a bug")


def test_a_last_receive_failing_alone_is_dead_lettered_once_and_the_refused_delete_stops_the_etl() -> None:
    queue = DeleteRefused()
    outcome = _processor(queue, BuggyTokenizer()).process([message(1, good(1), receive_count=3)])
    assert queue.dead_lettered == [("m1", "processing_failed")]
    assert isinstance(outcome.fatal, QueueConfigurationError)
