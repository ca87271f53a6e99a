"""A postponed batch is said: one WARNING "batch postponed" with the error's class and counts, rate-limited (W46-11).

It said "batch postponed: <the error's text>" for a dependency down - text a server's words can fill - once per
batch and per message of a batch isolated one by one, and a message postponed after failing alone was not said
at all. The text stayed at DEBUG (review 47, R47-4), so the first test captures every level.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from etl_service.errors import DependencyDown
from etl_service.service.batch import BatchProcessor
from etl_service.service.postponed_notice import PostponedNotice
from tests.unit.etl_builders import good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer

RAW_IP = "10.0.0.1"  # good(i)'s ip: a value of the batch


class WordyVaultDown(FakeTokenizer):
    """The vault down, its error's text carrying a value (as a server's words may)."""

    def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        raise DependencyDown(f"vault service UNAVAILABLE near {ips[0]}", "vault")


class BrokenTokenizer(FakeTokenizer):
    """A bug: every call fails with an error of no kind the ETL knows."""

    def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        raise KeyError("bug")


def _postponed_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("batch postponed")]


def test_a_batch_a_dependency_postpones_is_one_warning_with_its_class_and_counts_and_no_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="etl_service")  # every level: ETL_LOG_LEVEL=DEBUG is documented (R47-4)
    queue = FakeQueue()
    processor = BatchProcessor(queue, WordyVaultDown(), FakeLoginStore(), max_receive_count=5)
    processor.process([message(i, good(i), receive_count=1) for i in range(1, 4)])
    assert queue.retry_delays, "nothing was postponed: the test proves nothing"
    (line,) = _postponed_lines(caplog)
    assert line.levelno == logging.WARNING and line.getMessage() == "batch postponed"
    fields = line.__dict__
    assert (fields["reason"], fields["dependency"], fields["messages"]) == ("DependencyDown", "vault", 3)
    assert fields["delay_s"] == queue.retry_delays[0] and fields["batches"] == 1
    assert RAW_IP not in caplog.text and "u1" not in caplog.text
    for record in caplog.records:  # nor in any record's fields, which the JSON formatter writes out
        assert RAW_IP not in record.getMessage() and RAW_IP not in str(record.__dict__), record.__dict__


def test_a_batch_isolated_message_by_message_says_so_once_with_what_it_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="etl_service")
    queue = FakeQueue()
    processor = BatchProcessor(queue, BrokenTokenizer(), FakeLoginStore(), max_receive_count=5)
    processor.process([message(i, good(i), receive_count=1) for i in range(1, 21)])
    assert len(queue.retry_delays) == 20  # each message postponed alone, within the same seconds
    (line,) = _postponed_lines(caplog)
    assert (line.__dict__["reason"], line.__dict__["dependency"], line.__dict__["messages"]) == ("KeyError", "none", 1)


def test_postponements_within_the_interval_are_counted_into_the_next_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="etl_service")
    now = [100.0]
    notice = PostponedNotice(interval_seconds=10, clock=lambda: now[0])
    for _ in range(5):
        notice.postponed("DependencyDown", "openbao", 100, 30)
    notice.postponed("Throttled", "vault", 7, 40)  # another class: said at once
    now[0] += 10
    notice.postponed("DependencyDown", "openbao", 100, 60)
    said = [
        (r.__dict__["reason"], r.__dict__["batches"], r.__dict__["messages_since_last_line"]) for r in caplog.records
    ]
    assert said == [("DependencyDown", 1, 100), ("Throttled", 1, 7), ("DependencyDown", 5, 500)]
