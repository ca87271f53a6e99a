"""`dead-letters list` prints each letter's event id whole, so letters of one source are told apart.

It cut every event id to 24 characters: the exercise sample's ids (`file-<digest>-NNNN`, 26
characters, devstack/events.py) all showed as the same `file-b4e7bc667f399875-00`, and an
operator could not tell which event a letter was (documentation walk, 4 December). Over a fake
SQS client (tests/unit/dlq_clients.py); synthetic TEST-NET values only.
"""

from __future__ import annotations

import argparse

import pytest

from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.entrypoints import dead_letters
from tests.malformed_samples import body
from tests.unit.dlq_clients import DLQ, SOURCE, LargeDlq

SAMPLE_IDS = ["file-b4e7bc667f399875-0041", "file-b4e7bc667f399875-0042"]


def test_list_prints_event_ids_that_share_a_long_prefix_whole(capsys: pytest.CaptureFixture[str]) -> None:
    client = LargeDlq(reasoned=0)
    for message_id in SAMPLE_IDS:
        client.add_original(message_id, body(ip="203.0.113.41"), reason=None)
    dlq = DeadLetterSweep(client, SOURCE, DLQ, clock=client.clock)  # type: ignore[arg-type]
    assert dead_letters._run(argparse.Namespace(command="list"), dlq, None) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in lines[1:-1]}
    for message_id in SAMPLE_IDS:  # add_original gives each letter the event id `evt-<message id>`
        assert f" evt-{message_id} " in listed[message_id], listed[message_id]
    header = lines[0]
    assert all(listed[i].index(" evt-") + 1 == header.index("event id") for i in SAMPLE_IDS), lines


def test_an_event_id_longer_than_the_etl_accepts_is_cut_with_a_marker(capsys: pytest.CaptureFixture[str]) -> None:
    client = LargeDlq(reasoned=0)
    client.add_original("planted-" + "x" * 300, body(ip="203.0.113.42"), reason=None)  # only a DLQ writer sets such
    dlq = DeadLetterSweep(client, SOURCE, DLQ, clock=client.clock)  # type: ignore[arg-type]
    assert dead_letters._run(argparse.Namespace(command="list"), dlq, None) == 0
    planted = next(line for line in capsys.readouterr().out.splitlines() if " evt-planted-" in line)
    shown_id = next(word for word in planted.split() if word.startswith("evt-planted-"))
    assert len(shown_id) == 128 and shown_id.endswith("…"), shown_id
