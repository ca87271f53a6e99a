"""The ETL's ledger bounds the memory of the bodies it holds, not only their count (chaos 49, C49-6; R49-6)."""

from __future__ import annotations

import sys
import threading

from etl_service.service.inflight import InFlight
from tests.unit.etl_builders import message


def test_no_receive_is_reserved_while_the_bodies_held_reach_the_bound_and_one_is_once_they_settle() -> None:
    ledger = InFlight(2000, floor=2000, max_bytes=1000)
    stop = threading.Event()
    held = [message(i, "x" * 400) for i in range(3)]
    one = sys.getsizeof("x" * 400)
    assert ledger.reserve(10, stop, timeout=0)
    ledger.admit(10, held, 60)  # 3 x ~450 bytes: past the bound by one receive's
    assert ledger.held_bytes() == 3 * one and ledger.held() == 3  # 3 of a count bound of 2,000
    assert not ledger.reserve(10, stop, timeout=0.05)
    ledger.settle(held[:1])
    assert ledger.held_bytes() == 2 * one
    assert ledger.reserve(10, stop, timeout=0)
    ledger.settle(held)  # one settled twice counts once
    assert ledger.held_bytes() == 0 and ledger.held() == 0


def test_bodies_of_characters_past_u_ffff_count_the_four_bytes_each_python_holds() -> None:
    """R49-6: 2 x 400 emoji are 800 characters but ~3,200 bytes in memory - past a 3,000-byte bound."""
    ledger = InFlight(2000, floor=2000, max_bytes=3000)
    stop = threading.Event()
    held = [message(i, "\U0001f600" * 400) for i in range(2)]
    assert ledger.reserve(10, stop, timeout=0)
    ledger.admit(10, held, 60)
    assert ledger.held_bytes() >= 2 * 4 * 400
    assert not ledger.reserve(10, stop, timeout=0.05)
