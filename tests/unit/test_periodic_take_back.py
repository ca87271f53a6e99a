"""Run mode takes back what SQS's redrive moved to the DLQ, every few minutes (attack 19, finding 2).

Before, only a drain or `dead-letters redrive` did: `etl_service run`, what Kubernetes runs, left
such messages in the DLQ in clear for as long as the DLQ keeps them.
"""

import threading
import time

from etl_service.config import EtlConfig
from etl_service.service.outcomes import NoObserver
from tests.unit.etl_builders import consumer, good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer


class CountingObserver(NoObserver):
    def __init__(self) -> None:
        self.taken: list[int] = []

    def taken_back(self, count: int) -> None:
        self.taken.append(count)


def test_run_mode_takes_back_a_redriven_message_and_loads_it() -> None:
    queue, store, observer = FakeQueue(), FakeLoginStore(), CountingObserver()
    queue.redriven = [message(1, good(1), receive_count=5)]
    running = consumer(queue, FakeTokenizer(), store, observer, take_back_seconds=0.1, wait_seconds=0)
    summary: list[object] = []
    thread = threading.Thread(target=lambda: summary.append(running.run()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while "m1" not in store.rows and time.monotonic() < deadline:
        time.sleep(0.05)
    running.stop()
    thread.join(10)
    assert "m1" in store.rows and not queue.redriven
    assert observer.taken == [1] and getattr(summary[0], "taken_back_from_dlq", None) == 1


def test_the_take_back_period_is_a_setting_and_zero_turns_it_off() -> None:
    assert EtlConfig.take_back_seconds == 300.0
    queue, observer = FakeQueue(), CountingObserver()
    queue.redriven = [message(1, good(1), receive_count=5)]
    running = consumer(queue, FakeTokenizer(), FakeLoginStore(), observer, take_back_seconds=0, wait_seconds=0)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    time.sleep(0.3)
    running.stop()
    thread.join(10)
    assert queue.redriven and not observer.taken
