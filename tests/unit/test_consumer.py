"""The concurrent consumer over fakes: every message settles once, bounds hold, leases extend."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from typing import Any

from etl_service.domain.messages import QuarantineRecord, QueueMessage, UserLoginRow
from etl_service.errors import DependencyDown
from etl_service.service.batch import BatchProcessor
from etl_service.service.gate import DependencyGate
from etl_service.service.outcomes import BatchOutcome, NoObserver
from etl_service.service.ports import WriteResult
from tests.unit.etl_builders import consumer, messages
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer


class SlowStore(FakeLoginStore):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def write(
        self, rows: Sequence[UserLoginRow], quarantined: Sequence[QuarantineRecord], manifest: object = None
    ) -> WriteResult:
        time.sleep(self.seconds)
        return super().write(rows, quarantined)


class FlakyTokenizer(FakeTokenizer):
    """Down until `up` is set; counts calls made while down."""

    def __init__(self) -> None:
        super().__init__(down=True)
        self.failed_calls = 0

    def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        if self.down:
            self.failed_calls += 1
        return super().tokenize(ips, device_ids)


class HeldRecorder(NoObserver):
    def __init__(self) -> None:
        self.most_held = 0
        self.dependency_events: list[tuple[str, bool]] = []

    def held_messages(self, count: int) -> None:
        self.most_held = max(self.most_held, count)

    def dependency_changed(self, dependency: str, up: bool) -> None:
        self.dependency_events.append((dependency, up))


def test_concurrent_receivers_settle_every_message_exactly_once() -> None:
    queue, store = FakeQueue(), FakeLoginStore()
    queue.pending = messages(1000, bad_every=50)
    summary = consumer(queue, FakeTokenizer(), store, batch_size=50, receivers=4, workers=3).drain()
    deleted = [m for action, m in queue.actions if action == "delete"]
    assert sorted(deleted) == sorted(f"m{i}" for i in range(1000))
    assert (summary.received, summary.loaded, summary.quarantined) == (1000, 980, 20)
    assert len(store.rows) == 980 and len(store.quarantine) == 20


def test_in_flight_messages_never_exceed_the_bound() -> None:
    queue = FakeQueue()
    queue.pending = messages(300)
    recorder = HeldRecorder()
    seen: list[int] = []
    c = consumer(
        queue, FakeTokenizer(), SlowStore(0.02), recorder, batch_size=20, receivers=6, workers=2, max_in_flight=40
    )
    original = queue.receive

    def receive(max_messages: int, wait_seconds: int) -> list[QueueMessage]:
        seen.append(c.held)
        return original(max_messages, wait_seconds)

    queue.receive = receive  # type: ignore[method-assign]
    summary = c.drain()
    assert summary.loaded == 300
    assert max(seen) + 10 <= 40 and recorder.most_held <= 40


def test_the_heartbeat_extends_leases_of_slow_batches() -> None:
    queue = FakeQueue()
    queue.pending = messages(10)
    queue.lease_seconds = 3
    summary = consumer(queue, FakeTokenizer(), SlowStore(2.0), batch_size=10, visibility_seconds=3).drain()
    assert summary.loaded == 10
    assert queue.extended >= 10  # each message's lease extended while the slow write ran


def test_a_dependency_outage_pauses_receiving_instead_of_spinning() -> None:
    queue, tokenizer = FakeQueue(), FlakyTokenizer()
    queue.pending = messages(200)
    settings: dict[str, Any] = {"batch_size": 10, "receivers": 4, "max_in_flight": 40, "max_batch_age_seconds": 0.01}
    recorder = HeldRecorder()
    gate = DependencyGate(tokenizer.ready, recorder, first_pause=0.05, max_pause=0.2)
    c = consumer(queue, tokenizer, FakeLoginStore(), recorder, gate, **settings)
    threading.Timer(1.0, lambda: setattr(tokenizer, "down", False)).start()
    summary = c.drain()
    # Only the batches already in hand when the outage hit failed (40 messages in flight at most);
    # nobody kept receiving and failing for the whole second.
    assert tokenizer.failed_calls <= 6
    assert recorder.dependency_events == [("vault", False), ("vault", True)]
    assert summary.loaded == 200 and summary.retried == 10 * tokenizer.failed_calls


def test_stop_commits_what_was_received_and_releases_nothing_twice() -> None:
    queue, store = FakeQueue(), SlowStore(0.05)
    queue.pending = messages(500)
    c = consumer(queue, FakeTokenizer(), store, batch_size=25, receivers=4, workers=2, max_in_flight=100)
    threading.Timer(0.2, c.stop).start()
    summary = c.run()
    deleted = {m for a, m in queue.actions if a == "delete"}
    released = {m for a, m in queue.actions if a == "release"}
    left = {m.message_id for m in queue.pending}
    assert not deleted & released
    assert deleted | released | left == {f"m{i}" for i in range(500)}
    assert len(store.rows) == len(deleted) == summary.loaded
    assert c.held == 0


class PoisonedStore(FakeLoginStore):
    """Fails on any write that contains the poison user, as a bug would."""

    def write(
        self, rows: Sequence[UserLoginRow], quarantined: Sequence[QuarantineRecord], manifest: object = None
    ) -> WriteResult:
        if any(r.user_id == "u1" for r in rows):
            raise KeyError("bug")
        return super().write(rows, quarantined)


def test_a_poison_message_is_isolated_so_the_rest_of_its_batch_loads() -> None:
    queue, store = FakeQueue(), PoisonedStore()
    outcome: BatchOutcome = BatchProcessor(queue, FakeTokenizer(), store).process(messages(3))
    assert (outcome.loaded, outcome.retried, outcome.failed_dependency) == (2, 1, None)
    assert ("retry", "m1") in queue.actions and ("delete", "m1") not in queue.actions
    assert {("delete", "m0"), ("delete", "m2")} <= set(queue.actions)


def test_the_gate_probes_with_growing_pauses_until_the_dependency_answers() -> None:
    probes: list[float] = []

    def probe() -> None:
        probes.append(time.monotonic())
        if len(probes) < 4:
            raise DependencyDown("down", "database")

    gate = DependencyGate(probe, first_pause=0.05, max_pause=1.0)
    gate.report_failure("database")
    assert gate.down == "database"
    assert gate.wait_open(threading.Event())
    assert gate.down is None and len(probes) == 4
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert gaps[0] < gaps[1] < gaps[2]


def test_a_stopped_gate_wait_returns_false() -> None:
    gate = DependencyGate(lambda: (_ for _ in ()).throw(DependencyDown("down", "vault")), first_pause=0.01)
    gate.report_failure("vault")
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    assert gate.wait_open(stop) is False
