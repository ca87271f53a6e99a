"""A dependency failing a batch: the vault's quota paces the ETL, and no last receive is left to SQS's redrive.

Attack 19, finding 2: a metered refusal (RESOURCE_EXHAUSTED with `retry-after-ms`) was an outage
whose probe (health, `SELECT 1`) passed at once, and a message whose batch failed for a dependency
on its last receive was postponed, so SQS's redrive moved it to the DLQ with its body in clear.
The waits within a receive are the vault client's: tests/unit/test_etl_quota_waits.py.
"""

import itertools
import json
import threading
import time
from collections.abc import Sequence

from etl_service.domain.messages import EventKey, QuarantineRecord, UserLoginRow
from etl_service.errors import Throttled, vault_status_error
from etl_service.service.batch import BatchProcessor
from etl_service.service.gate import DependencyGate
from etl_service.service.outcomes import TOKENIZE_OUTCOME_UNKNOWN
from etl_service.service.ports import LoadedBefore, WriteResult
from tests.unit.etl_builders import good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer
from tests.unit.test_batch import EnvelopeSealer


class MeteredTokenizer(FakeTokenizer):
    """The vault over the ETL's new-token quota: it says when to come back."""

    def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        raise vault_status_error("RESOURCE_EXHAUSTED", "new-token quota exceeded", "Tokenize", retry_after=40.0)


def test_a_metered_refusal_is_its_own_kind_carrying_the_vaults_retry_after() -> None:
    error = vault_status_error("RESOURCE_EXHAUSTED", "quota", "Tokenize", retry_after=2.5)
    assert isinstance(error, Throttled) and error.retry_after == 2.5
    unsaid = vault_status_error("RESOURCE_EXHAUSTED", "quota", "Tokenize")
    assert isinstance(unsaid, Throttled) and unsaid.retry_after == 1.0  # none given: a second


def test_a_metered_batch_is_postponed_no_shorter_than_the_retry_after_and_tells_the_gate() -> None:
    queue = FakeQueue()
    outcome = BatchProcessor(queue, MeteredTokenizer(), FakeLoginStore(), max_receive_count=5).process(
        [message(1, good(1), receive_count=1)]
    )
    assert queue.retry_delays == [40] and outcome.retry_after == 40.0
    assert outcome.failed_dependency == "vault" and not queue.dead_lettered


def test_on_its_last_receive_a_message_a_dependency_kept_from_loading_is_sealed_and_dead_lettered() -> None:
    for tokenizer in (MeteredTokenizer(), FakeTokenizer(down=True)):
        queue, store = FakeQueue(), FakeLoginStore()
        processor = BatchProcessor(
            queue, tokenizer, store, max_receive_count=3, sealer=EnvelopeSealer(), tokenize_retry_seconds=0
        )  # the vault stays down: no retry of an unknown Tokenize outcome to wait for (batch.py `_tokenize`)
        outcome = processor.process([message(1, good(1), receive_count=3), message(2, good(2), receive_count=1)])
        assert queue.dead_lettered == [("m1", "dependency_unavailable")]
        assert [json.loads(b)["sealed_body"] for b in queue.dead_letter_bodies] == ["vault:v1:x"]
        assert store.quarantine["m1"].reason == "dependency_unavailable"
        assert ("delete", "m1") in queue.actions and ("retry", "m2") in queue.actions
        assert ("delete", "m2") not in queue.actions and outcome.errored == {"m2"}
        assert outcome.failed_dependency == "vault" and outcome.reasons == {"dependency_unavailable": 1}


def test_with_postgres_down_too_the_last_receive_is_still_sealed_and_dead_lettered_without_a_row() -> None:
    queue, store = FakeQueue(), FakeLoginStore(down=True)
    processor = BatchProcessor(queue, FakeTokenizer(), store, max_receive_count=3, sealer=EnvelopeSealer())
    outcome = processor.process([message(1, good(1), receive_count=3)])
    assert queue.dead_lettered == [("m1", "dependency_unavailable")] and not store.quarantine
    assert not [b for b in queue.dead_letter_bodies if "10.0.0.1" in b]
    assert ("delete", "m1") in queue.actions and outcome.reasons == {"dependency_unavailable": 1}


def test_the_gate_waits_out_the_vaults_retry_after_before_it_probes() -> None:
    probes: list[float] = []
    gate = DependencyGate(lambda: probes.append(time.monotonic()), first_pause=0.01)
    started = time.monotonic()
    gate.report_failure("vault", retry_after=0.3)
    assert gate.wait_open(threading.Event())
    assert probes and probes[0] - started >= 0.3


def test_a_failure_soon_after_the_gate_reopened_continues_the_growing_pause() -> None:
    probes: list[float] = []
    gate = DependencyGate(lambda: probes.append(time.monotonic()), first_pause=0.1, max_pause=1.0)
    opened = []
    for _ in range(3):  # the probe passes each time, the batch fails again at once (a trigger behind SELECT 1)
        gate.report_failure("database")
        before = time.monotonic()
        assert gate.wait_open(threading.Event())
        opened.append(time.monotonic() - before)
    assert all(b > a + 0.05 for a, b in itertools.pairwise(opened)), opened  # 0.1, 0.2, 0.4 s: not 0.1 each time


class FailingTokenizer(FakeTokenizer):
    def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        raise vault_status_error("INTERNAL", "a bug", "Tokenize")


class DownAfterTheRead(FakeLoginStore):
    """Postgres answers the batch's read of loaded events, then goes down before its quarantine row."""

    def loaded_before(self, events: Sequence[EventKey]) -> LoadedBefore:
        return LoadedBefore(frozenset())


def test_a_failing_message_on_its_last_receive_with_postgres_down_is_still_sealed_and_dead_lettered() -> None:
    # Before, Postgres down at its quarantine row postponed it, and SQS's redrive moved it in clear.
    queue, store = FakeQueue(), DownAfterTheRead(down=True)
    processor = BatchProcessor(queue, FailingTokenizer(), store, max_receive_count=3, sealer=EnvelopeSealer())
    outcome = processor.process([message(1, good(1), receive_count=3)])
    assert queue.dead_lettered == [("m1", "processing_failed")] and not store.quarantine
    assert [json.loads(b)["sealed_body"] for b in queue.dead_letter_bodies] == ["vault:v1:x"]
    assert ("delete", "m1") in queue.actions and outcome.errored == set()


def test_a_last_receive_a_dependency_failed_keeps_validations_reasons_and_no_id_carrying_its_own_values() -> None:
    # Review 20, R20-9: the raw messages were dead-lettered - an event_id holding the event's own device id
    # in the quarantine row's key and the DLQ's attribute, and a refused event relabelled dependency_unavailable.
    queue, store = FakeQueue(), FakeLoginStore()
    processor = BatchProcessor(
        queue, FakeTokenizer(down=True), store, max_receive_count=3, sealer=EnvelopeSealer(), tokenize_retry_seconds=0
    )
    own = message(1, good(1), receive_count=3, event_id="100-00-0001:1733300000")  # its device id and a time
    bad_locale = message(2, {**good(2), "locale": "en_US.UTF-8"}, receive_count=3, event_id="100-00-0002")
    kept = message(3, good(3), receive_count=3, event_id="e3")
    processor.process([own, bad_locale, kept, message(4, good(4), receive_count=1)])
    reasons = {key: record.reason for key, record in store.quarantine.items()}
    assert reasons == {"m1": "invalid_event_id", "m2": "invalid_locale", "e3": "dependency_unavailable"}
    assert sorted(queue.dead_lettered) == [
        ("m1", "invalid_event_id"),
        ("m2", "invalid_locale"),
        ("m3", "dependency_unavailable"),
    ]
    assert sorted(queue.dead_letter_event_ids, key=str) == [None, None, "e3"]
    assert ("retry", "m4") in queue.actions and ("delete", "m4") not in queue.actions


class BuggyStore(FakeLoginStore):
    def write(
        self, rows: Sequence[UserLoginRow], quarantined: Sequence[QuarantineRecord], manifest: object = None
    ) -> WriteResult:
        raise KeyError("a bug")


def test_a_message_failing_on_its_last_receive_keeps_no_id_carrying_its_own_values() -> None:
    queue = FakeQueue()
    processor = BatchProcessor(queue, FakeTokenizer(), BuggyStore(), max_receive_count=3, sealer=EnvelopeSealer())
    refused = message(1, {**good(1), "locale": "en_US.UTF-8"}, receive_count=3, event_id="100-00-0001")
    processor.process([refused])
    assert queue.dead_lettered == [("m1", "processing_failed")] and queue.dead_letter_event_ids == [None]


class LosesOneAnswer(FakeTokenizer):
    """A vault that stores the first call's values but whose answer is lost (DEADLINE_EXCEEDED), then answers."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        answer = super().tokenize(ips, device_ids)
        if not self.lost:
            self.lost += 1
            raise vault_status_error("DEADLINE_EXCEEDED", "Deadline Exceeded", "Tokenize")
        return answer


def test_a_tokenize_answer_lost_on_a_last_receive_is_asked_again_and_loads_and_not_before_the_last() -> None:
    # Attack 41, A41-4: the lost answer dead-lettered the message with no record of the tokens the vault stored.
    queue, store, tokenizer = FakeQueue(), FakeLoginStore(), LosesOneAnswer()
    processor = BatchProcessor(queue, tokenizer, store, max_receive_count=3, sealer=EnvelopeSealer())
    outcome = processor.process([message(1, good(1), receive_count=3)])
    assert outcome.loaded == 1 and not queue.dead_lettered and len(tokenizer.calls) == 2  # the same call twice
    assert tokenizer.calls[0] == tokenizer.calls[1]
    # Before the last receive nothing is retried within the receive: postponed, the next receive asks again.
    queue, store, tokenizer = FakeQueue(), FakeLoginStore(), LosesOneAnswer()
    processor = BatchProcessor(queue, tokenizer, store, max_receive_count=3, sealer=EnvelopeSealer())
    outcome = processor.process([message(1, good(1), receive_count=2)])
    assert outcome.loaded == 0 and outcome.errored == {"m1"} and len(tokenizer.calls) == 1


def test_a_tokenize_outcome_still_unknown_after_its_retries_is_dead_lettered_saying_so() -> None:
    queue, store = FakeQueue(), FakeLoginStore()
    processor = BatchProcessor(
        queue, FakeTokenizer(down=True), store, max_receive_count=3, sealer=EnvelopeSealer(), tokenize_retry_seconds=0.3
    )
    started = time.monotonic()
    processor.process([message(1, good(1), receive_count=3)])
    assert queue.dead_lettered == [("m1", "dependency_unavailable")]
    assert store.quarantine["m1"].detail.startswith(TOKENIZE_OUTCOME_UNKNOWN)
    assert time.monotonic() - started < 2  # bounded


class Scripted(FakeTokenizer):
    """A vault whose Tokenize calls end as scripted, in order (a list of errors; None: it answers); `refuse_health`."""

    def __init__(self, *ends: Exception | None, refuse_health: bool = False) -> None:
        super().__init__()
        self.ends = list(ends)
        self.refuse_health = refuse_health

    def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        end = self.ends.pop(0) if self.ends else None
        if end is not None:
            self.calls.append((list(ips), list(device_ids)))
            raise end
        return super().tokenize(ips, device_ids)

    def ready(self) -> None:
        if self.refuse_health:
            raise vault_status_error("UNAUTHENTICATED", "certificate revoked", "health check")


def _nothing_stored(code: str, retry_after: float = 0.0) -> Exception:
    return vault_status_error(code, "refused", "Tokenize", retry_after, nothing_stored=True)


def _last_receive_letter(tokenizer: FakeTokenizer) -> tuple[str, str, object]:
    queue, store = FakeQueue(), FakeLoginStore()
    processor = BatchProcessor(
        queue, tokenizer, store, max_receive_count=3, sealer=EnvelopeSealer(), tokenize_retry_seconds=0.3
    )
    outcome = processor.process([message(1, good(1), receive_count=3)])
    ((_, reason),) = queue.dead_lettered
    return reason, store.quarantine["m1"].detail, outcome.fatal


def test_a_vault_that_said_each_tokenize_of_the_last_receive_stored_nothing_gets_a_plain_letter() -> None:
    # A41-4's remainder (a): the vault's own UNAVAILABLE (its database refused before any commit) was marked
    # "tokenize outcome unknown", and `dead-letters erase` kept the letter for a resend that finds nothing.
    down = Scripted(*[_nothing_stored("UNAVAILABLE")] * 3)
    reason, detail, _ = _last_receive_letter(down)
    assert reason == "dependency_unavailable" and not detail.startswith(TOKENIZE_OUTCOME_UNKNOWN)
    assert len(down.calls) == 2  # still retried (within 0.3 s: once): the database may be back
    # One call of the receive without the vault's word (its answer lost) and the outcome is unknown again.
    for ends in (
        [
            vault_status_error("DEADLINE_EXCEEDED", "Deadline Exceeded", "Tokenize"),
            *[_nothing_stored("UNAVAILABLE")] * 2,
        ],
        [
            _nothing_stored("UNAVAILABLE"),
            vault_status_error("UNAVAILABLE", "lost", "Tokenize"),
            _nothing_stored("UNAVAILABLE"),
        ],
    ):
        reason, detail, _ = _last_receive_letter(Scripted(*ends))
        assert reason == "dependency_unavailable" and detail.startswith(TOKENIZE_OUTCOME_UNKNOWN)


def test_a_retry_after_a_lost_answer_ending_internal_or_refused_marks_the_letter_unknown() -> None:
    # A41-4's remainder (b): these ends were taken for a bug (processing_failed) or a plain release, unmarked.
    lost = vault_status_error("DEADLINE_EXCEEDED", "Deadline Exceeded", "Tokenize")
    for second in (vault_status_error("INTERNAL", "oops", "Tokenize"), vault_status_error("UNKNOWN", "?", "Tokenize")):
        reason, detail, fatal = _last_receive_letter(Scripted(lost, second))
        assert reason == "dependency_unavailable" and detail.startswith(TOKENIZE_OUTCOME_UNKNOWN) and fatal is None
    reason, detail, fatal = _last_receive_letter(Scripted(lost, refuse_health=True))  # the retry's health check
    assert reason == "dependency_unavailable" and detail.startswith(TOKENIZE_OUTCOME_UNKNOWN)
    assert fatal is not None and "UNAUTHENTICATED" in str(fatal)  # the ETL still stops for the refusal


def test_a_metered_refusal_on_a_last_receive_the_vault_does_not_say_stored_nothing_is_marked_unknown() -> None:
    # The vault stores one type's new values, then meters the other's: RESOURCE_EXHAUSTED, the first stored.
    reason, detail, _ = _last_receive_letter(Scripted(vault_status_error("RESOURCE_EXHAUSTED", "q", "Tokenize", 5.0)))
    assert reason == "dependency_unavailable" and detail.startswith(TOKENIZE_OUTCOME_UNKNOWN)
    reason, detail, _ = _last_receive_letter(Scripted(_nothing_stored("RESOURCE_EXHAUSTED", 5.0)))
    assert reason == "dependency_unavailable" and not detail.startswith(TOKENIZE_OUTCOME_UNKNOWN)


def test_a_last_receive_a_dependency_kept_from_loading_is_sealed_and_dead_lettered_at_a_stop_too() -> None:
    """etl51: a SIGTERM changes nothing of where it goes - sealed, with its reason, never left to the redrive.

    Left to the queue at a stop, SQS's redrive moved it to the DLQ in clear at its next receive (no raw value in the
    DLQ: the ETL seals every letter it can); the stop's part is only that the waits for the database end at once.
    """
    for tokenizer, store in (
        (FakeTokenizer(down=True), FakeLoginStore()),
        (FakeTokenizer(), FakeLoginStore(down=True)),
    ):
        queue, stopping = FakeQueue(), threading.Event()
        stopping.set()
        processor = BatchProcessor(
            queue, tokenizer, store, max_receive_count=3, sealer=EnvelopeSealer(), stopping=stopping
        )
        outcome = processor.process([message(1, good(1), receive_count=3), message(2, good(2), receive_count=1)])
        assert queue.dead_lettered == [("m1", "dependency_unavailable")]
        assert [json.loads(b)["sealed_body"] for b in queue.dead_letter_bodies] == ["vault:v1:x"]
        assert ("release", "m1") not in queue.actions and ("delete", "m1") in queue.actions
        assert ("delete", "m2") not in queue.actions and outcome.reasons == {"dependency_unavailable": 1}
