"""A last receive the database kept from loading: asked whether it loaded only when that can be (R49-4).

C49-2 asks user_logins, before dead-lettering such a batch, which of its events a COMMIT whose answer was lost did
load. In a real outage (no connection: PoolTimeout) nothing was sent, and the question waited out the pool and the
login check once more for every last-receive batch; and the events it found were counted as replays (duplicates),
though this receive's COMMIT loaded them.
"""

from __future__ import annotations

from collections.abc import Sequence

from etl_service.domain.messages import EventKey, QuarantineRecord, UserLoginRow
from etl_service.errors import DependencyDown
from etl_service.service.batch import BatchProcessor
from etl_service.service.ports import LoadedBefore, WriteResult
from tests.unit.etl_builders import good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer
from tests.unit.test_batch import EnvelopeSealer


class Unreachable(FakeLoginStore):
    """A database the pool cannot reach: nothing is sent to it (nothing_stored), every call waits and fails."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    def loaded_before(self, events: Sequence[EventKey]) -> LoadedBefore:
        self.asked += 1
        if self.asked > 1:
            raise _unreachable()
        return super().loaded_before(events)

    def write(
        self, rows: Sequence[UserLoginRow], quarantined: Sequence[QuarantineRecord], manifest: object = None
    ) -> WriteResult:
        raise _unreachable()


def _unreachable() -> DependencyDown:
    down = DependencyDown("Postgres unavailable: PoolTimeout: couldn't get a connection", "database")
    down.nothing_stored = True
    return down


class AnswerLost(FakeLoginStore):
    """A load whose COMMIT committed and whose answer was lost (nothing_stored False: the outcome is unknown)."""

    def __init__(self) -> None:
        super().__init__()
        self.cut = True

    def write(
        self, rows: Sequence[UserLoginRow], quarantined: Sequence[QuarantineRecord], manifest: object = None
    ) -> WriteResult:
        written = super().write(rows, quarantined, manifest)
        if self.cut and rows:
            self.cut = False
            raise DependencyDown("Postgres unavailable: OperationalError: server closed the connection", "database")
        return written


def _processor(queue: FakeQueue, store: FakeLoginStore) -> BatchProcessor:
    return BatchProcessor(
        queue, FakeTokenizer(), store, max_receive_count=3, sealer=EnvelopeSealer(), tokenize_retry_seconds=0
    )


def test_an_unreachable_database_is_not_asked_again_whether_a_last_receive_loaded() -> None:
    queue, store = FakeQueue(), Unreachable()
    _processor(queue, store).process([message(i, good(i), receive_count=3) for i in range(3)])
    assert store.asked == 1  # step 2's replay check only; before: once more after the failed write
    assert sorted(queue.dead_lettered) == [(f"m{i}", "dependency_unavailable") for i in range(3)]


def test_events_a_lost_commit_answer_loaded_on_a_last_receive_are_counted_loaded_not_duplicates() -> None:
    queue, store = FakeQueue(), AnswerLost()
    outcome = _processor(queue, store).process([message(i, good(i), receive_count=3) for i in range(3)])
    assert queue.dead_lettered == [] and len(store.rows) == 3
    assert (outcome.loaded, outcome.already_loaded) == (3, 0)
